"""The FastAPI application: health, plugin list, predict, and the web page.

``POST /predict/{plugin}`` takes a multipart form: ``files`` (DICOM files, one zip
of a series, or one NIfTI) or ``study_uid`` (+ ``series_uid``) to fetch from the
configured DICOMweb server; optional ``report`` text and ``clinical`` JSON.
``?output=`` picks the answer: ``json`` (the Prediction), ``sr`` (a DICOM
Structured Report), ``pm`` (the heatmap as a DICOM Parametric Map), ``seg`` (the
plugin's mask as a DICOM SEG), ``dicom`` (a zip of SR, PM and SEG that cite each
other), ``heatmap`` (PNG of the Grad-CAM over a slice) or ``viewer`` (Prediction
plus that PNG, for the web page).
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

import medplug
from medplug.contract import Case, Prediction
from medplug.errors import MedplugError, ModelFileError, PluginNotFoundError
from medplug.serve.auth import require_token
from medplug.serve.catalog import PluginCatalog
from medplug.serve.dicom_objects import dicom_objects
from medplug.serve.dicomweb import check_uid, fetch_study
from medplug.serve.guard import Admission, RequestGuard
from medplug.serve.render import heatmap_on_image_grid, overlay_png
from medplug.serve.scrub import neutral_sources, scrub_paths, scrub_upload_paths
from medplug.serve.service import PredictionService
from medplug.serve.settings import ServeSettings
from medplug.serve.uploads import Upload, UploadLimits, save_uploads

log = logging.getLogger("medplug.serve")
STATIC = Path(__file__).parent / "static"
MAX_TEXT_FIELD = 256 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost")
Output = Literal["json", "sr", "pm", "seg", "dicom", "heatmap", "viewer"]

PREDICT_FORM_SCHEMA = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "DICOM files of one series, one zip of a series, "
                            "or one NIfTI (.nii/.nii.gz).",
                        },
                        "study_uid": {
                            "type": "string",
                            "description": "Instead of files: a study on the configured "
                            "DICOMweb server.",
                        },
                        "series_uid": {"type": "string"},
                        "report": {"type": "string", "description": "Radiology report text."},
                        "clinical": {
                            "type": "string",
                            "description": 'Clinical fields as JSON, e.g. {"age": 61}.',
                        },
                    },
                }
            }
        }
    }
}


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the application; plugin discovery starts in a background thread at start-up
    (so ``/health`` answers at once) and models load on the first request that needs them."""
    from medplug.threads import apply_thread_policy

    apply_thread_policy(parallel=settings.workers)  # each worker thread gets its share
    service = PredictionService(settings)
    admission = Admission(settings.max_pending)
    catalog = PluginCatalog()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        catalog.start_warming()
        yield
        service.shutdown()

    app = FastAPI(
        title="medplug",
        version=medplug.__version__,
        description="Run medplug plugins on DICOM/NIfTI studies. Research use only.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.admission = admission
    app.state.catalog = catalog
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_upload_bytes,
        timeout_s=settings.request_timeout_s,
        admission=admission,
    )
    if settings.insecure_local:
        # No token: a web page the user visits could reach 127.0.0.1 through DNS
        # rebinding (evil.example resolving to 127.0.0.1); only loopback Host names pass.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOCAL_HOSTS))
    app.add_exception_handler(MedplugError, _medplug_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load; needs no token so load balancers can call it."""
        return {
            "status": "ok",
            "auth": settings.token is not None,
            "workers": settings.workers,
            "pending": admission.count,
            "max_pending": admission.limit,
            "plugins": catalog.state,
        }

    @app.get("/plugins", dependencies=[Depends(require_token)])
    async def plugins() -> list[dict[str, Any]]:
        """Installed plugins with their infos and whether a model folder is present."""
        # Discovery imports plugin modules (torch): never on the event loop.
        return await run_in_threadpool(plugin_list)

    def plugin_list() -> list[dict[str, Any]]:
        answer = []
        for entry in catalog.entries():
            info = entry.describe() if entry.ok else None
            try:
                model_dir = service.model_dir(entry.name)
            except PluginNotFoundError:  # a name no URL could ask for
                continue
            if model_dir is None:
                from medplug.registry import default_model_dir

                model_dir = default_model_dir(entry.name)
            answer.append(
                {
                    "name": entry.name,
                    "distribution": entry.distribution,
                    "ok": entry.ok,
                    "error": scrub_paths(entry.error) if entry.error else None,
                    "model_available": model_dir.is_dir(),
                    "info": info.to_dict() if info else None,
                }
            )
        return answer

    @app.post(
        "/predict/{plugin}",
        dependencies=[Depends(require_token)],
        openapi_extra=PREDICT_FORM_SCHEMA,
        responses={
            200: {
                "content": {
                    "application/json": {},
                    "application/dicom": {},
                    "image/png": {},
                },
                "description": "The prediction, as JSON, DICOM SR or heatmap PNG (?output=).",
            },
            413: {"description": "Upload over the size or file-count limit."},
            503: {"description": "Too many predictions queued."},
        },
    )
    async def predict(
        plugin: str,
        request: Request,
        output: Output = Query(
            "json",
            description="json, sr (DICOM SR), pm (heatmap as DICOM Parametric Map), seg "
            "(DICOM SEG), dicom (zip of SR, PM and SEG), heatmap (PNG) or viewer",
        ),
        slice_index: int | None = Query(
            None, alias="slice", description="Slice for the heatmap PNG (default: hottest)."
        ),
        explain: bool = Query(
            True,
            description="Compute the explanation (heatmap); explain=false is faster "
            "(the image plugin may use ONNX Runtime).",
        ),
    ) -> Response:
        """Predict one study with ``plugin``."""
        if not explain and output in ("heatmap", "pm"):
            raise HTTPException(400, f"output={output} needs the explanation (explain=true)")
        form = await _read_form(request, settings)
        report = _text_field(form, "report")
        clinical = _clinical(_text_field(form, "clinical"))
        study_uid = _text_field(form, "study_uid")
        series_uid = _text_field(form, "series_uid")
        uploads = [
            Upload(part.file, part.filename)
            for key in ("files", "file")
            for part in form.getlist(key)
            if isinstance(part, UploadFile)
        ]
        if study_uid and uploads:
            raise HTTPException(400, "send either files or a study_uid, not both")
        if study_uid and not settings.dicomweb_url:
            raise HTTPException(400, "this server has no DICOMweb source (--dicomweb-url)")
        if study_uid:
            check_uid(study_uid, "study_uid")
        if series_uid:
            check_uid(series_uid, "series_uid")

        def job() -> Response:
            with tempfile.TemporaryDirectory(prefix="medplug-serve-") as tmp:
                folder = Path(tmp) / "input"
                if study_uid:
                    assert settings.dicomweb_url is not None
                    path = fetch_study(
                        settings.dicomweb_url, study_uid, series_uid, folder, settings.max_files
                    )
                else:
                    limits = UploadLimits(
                        settings.max_files,
                        settings.max_unzipped_bytes,
                        settings.max_unzipped_entry_bytes,
                    )
                    path = save_uploads(uploads, folder, limits)
                case, prediction = service.predict_path(
                    plugin, path, report, clinical, explain=explain
                )
                # No server path in any answer: the input is "upload" or "dicomweb".
                prediction.provenance = neutral_sources(
                    prediction.provenance, Path(tmp), "dicomweb" if study_uid else "upload"
                )
                return _answer(output, case, prediction, slice_index, path)

        ticket = getattr(request.state, "admission_ticket", None)
        try:
            return await service.run(ticket, job)
        finally:
            await form.close()

    return app


async def _read_form(request: Request, settings: ServeSettings) -> Any:
    try:
        return await request.form(
            max_files=settings.max_files + 1, max_fields=16, max_part_size=MAX_TEXT_FIELD
        )
    except StarletteHTTPException as exc:  # what the multipart parser raises
        if exc.status_code == 400 and "Too many files" in str(exc.detail):
            raise HTTPException(
                413, f"more than {settings.max_files} files uploaded; send a zip or fewer files"
            ) from None
        raise


def _text_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value).strip() or None


def _clinical(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"clinical is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(
        isinstance(value, int | float | str) or value is None for value in data.values()
    ):
        raise HTTPException(422, "clinical must be a JSON object of numbers, strings or null")
    return data


def _answer(
    output: str, case: Case, prediction: Prediction, slice_index: int | None, input_path: Path
) -> Response:
    if output == "json":
        return JSONResponse(scrub_upload_paths(prediction.to_json()))
    if output in ("sr", "pm", "seg"):
        return Response(
            dicom_objects(case, prediction, input_path, output), media_type="application/dicom"
        )
    if output == "dicom":
        return Response(
            dicom_objects(case, prediction, input_path, output), media_type="application/zip"
        )
    image = case.image
    has_heatmap = prediction.explanation is not None and prediction.explanation.heatmap is not None
    if output == "heatmap":
        if image is None:
            raise HTTPException(400, "the heatmap needs an image input")
        png, used_slice = overlay_png(image, heatmap_on_image_grid(prediction, image), slice_index)
        return Response(png, media_type="image/png", headers={"x-slice": str(used_slice)})
    payload = prediction.to_json()
    overlay = None
    if image is not None and has_heatmap:
        png, used_slice = overlay_png(image, heatmap_on_image_grid(prediction, image), slice_index)
        payload["explanation"]["heatmap"] = None  # the page shows the PNG instead
        overlay = {
            "png_base64": base64.b64encode(png).decode("ascii"),
            "slice": used_slice,
            "slices": image.array.shape[2] if image.array.ndim >= 3 else 1,
            # Row spacing / column spacing, so the page draws square millimetres.
            "pixel_aspect": image.spacing[1] / image.spacing[0],
        }
    return JSONResponse({"prediction": scrub_upload_paths(payload), "overlay": overlay})


async def _medplug_error(request: Request, exc: Exception) -> JSONResponse:
    status = 422
    if isinstance(exc, PluginNotFoundError):
        status = 404
    elif isinstance(exc, ModelFileError):
        status = 503
    log.info("request refused: %s", type(exc).__name__)
    return JSONResponse(
        {"detail": scrub_paths(str(exc)), "error": type(exc).__name__}, status_code=status
    )
