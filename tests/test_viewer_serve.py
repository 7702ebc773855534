"""REST API security and prediction, through FastAPI's TestClient and a real uvicorn."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from viewer_support import (
    install_bright_spot,
    phantom,
    write_bright_spot_model,
    write_dicom_series,
    write_nifti,
)

from medplug.contract import Prediction
from medplug.serve import ServeSettings, create_app
from medplug.serve.background import serve_in_thread
from medplug.serve.settings import ServeConfigError, read_token

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bright_spot_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_bright_spot(tmp_path_factory.mktemp("bright_spot"))


@pytest.fixture
def models(bright_spot_site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.syspath_prepend(str(bright_spot_site))
    write_bright_spot_model(tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_series(tmp_path_factory.mktemp("series") / "ct", phantom())


@pytest.fixture(scope="module")
def series_zip(series: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(series.iterdir()):
            archive.write(path, f"Doe_John/series 1/{path.name}")
    return buffer.getvalue()


def make_client(models: Path, **overrides) -> TestClient:
    settings = ServeSettings(token=TOKEN, models_dir=models, **overrides)
    return TestClient(create_app(settings))


def dicom_parts(series: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", (f"Doe_John_{i}.dcm", path.read_bytes(), "application/dicom"))
        for i, path in enumerate(sorted(series.iterdir()))
    ]


def zip_of(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


# ----------------------------------------------------------------- auth and settings


def test_auth_is_required_and_checked(models: Path) -> None:
    client = make_client(models)
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/plugins").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all-xxxx"}
    assert client.get("/plugins", headers=wrong).status_code == 401
    response = client.post("/predict/bright-spot", files={"files": ("a.dcm", b"x")})
    assert response.status_code == 401
    listed = {p["name"]: p for p in client.get("/plugins", headers=AUTH).json()}
    assert listed["bright-spot"]["ok"] and listed["bright-spot"]["model_available"]
    assert listed["bright-spot"]["info"]["labels"] == ["no_lesion", "lesion"]
    assert client.get("/docs").status_code == 200
    assert "/predict/{plugin}" in client.get("/openapi.json").json()["paths"]


def test_settings_refuse_to_run_without_a_token() -> None:
    with pytest.raises(ServeConfigError, match="no API token"):
        ServeSettings(token=None)
    with pytest.raises(ServeConfigError, match="at least 16"):
        ServeSettings(token="short")
    assert ServeSettings(token=None, insecure_local=True).token is None


def test_token_comes_from_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDPLUG_SERVE_TOKEN_FILE", raising=False)
    monkeypatch.setenv("MEDPLUG_SERVE_TOKEN", "from-the-environment-123")
    assert read_token() == "from-the-environment-123"
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    assert read_token(token_file) == "from-a-file-0123456789"
    monkeypatch.setenv("MEDPLUG_SERVE_TOKEN_FILE", str(token_file))
    assert read_token() == "from-a-file-0123456789"
    token_file.write_text("  \n")
    with pytest.raises(ServeConfigError, match="is empty"):
        read_token()
    with pytest.raises(ServeConfigError, match="does not exist"):
        read_token(tmp_path / "missing")


def test_cli_refuses_to_start_without_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPLUG_SERVE_TOKEN")}
    result = subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no API token" in result.stderr


# ----------------------------------------------------------------- predictions


def test_dicom_files_are_predicted(models: Path, series: Path) -> None:
    client = make_client(models)
    response = client.post(
        "/predict/bright-spot",
        headers=AUTH,
        files=dicom_parts(series),
        data={"report": "No artifact.", "clinical": '{"age": 61, "smoking": "former"}'},
    )
    assert response.status_code == 200, response.text
    prediction = Prediction.from_json(response.json())
    assert prediction.label == "lesion"
    assert prediction.probabilities["lesion"] > 0.9
    assert prediction.explanation.heatmap.shape == (40, 32, 12)
    assert "report mentions artifacts" in prediction.warnings


def test_zip_and_nifti_uploads_and_heatmap_png(
    models: Path, series_zip: bytes, tmp_path: Path
) -> None:
    client = make_client(models)
    response = client.post(
        "/predict/bright-spot?output=heatmap",
        headers=AUTH,
        files={"files": ("study.zip", series_zip, "application/zip")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-slice"] == "7"  # the blob's slice
    png = Image.open(io.BytesIO(response.content))
    assert png.size == (40, 32)  # columns x rows of the DICOM slice
    nifti = write_nifti(tmp_path / "ct.nii.gz", phantom(blob=False))
    response = client.post(
        "/predict/bright-spot?output=viewer",
        headers=AUTH,
        files={"files": ("ct.nii.gz", nifti.read_bytes(), "application/gzip")},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prediction"]["label"] == "no_lesion"
    assert answer["overlay"]["slices"] == 12


def test_bad_input_is_a_clear_422_without_server_paths(models: Path) -> None:
    client = make_client(models)
    response = client.post(
        "/predict/bright-spot",
        headers=AUTH,
        files={"files": ("Doe_John.dcm", b"\0" * 132 + b"not really dicom", "application/dicom")},
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "medplug-serve-" not in detail and "Doe_John" not in detail
    bad_json = client.post(
        "/predict/bright-spot",
        headers=AUTH,
        files={"files": ("a.dcm", b"x")},
        data={"clinical": "{"},
    )
    assert bad_json.status_code == 422 and "clinical" in bad_json.json()["detail"]
    unknown = client.post("/predict/nope", headers=AUTH, files={"files": ("a.dcm", b"x")})
    assert unknown.status_code == 404


# ----------------------------------------------------------------- limits


def test_oversized_upload_is_refused_with_413(models: Path, series_zip: bytes) -> None:
    client = make_client(models, max_upload_bytes=16 * 1024)
    response = client.post(
        "/predict/bright-spot",
        headers=AUTH,
        files={"files": ("study.zip", series_zip, "application/zip")},
    )
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(64):
            yield b"\0" * 1024

    streamed = client.post(
        "/predict/bright-spot",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=chunks(),
    )
    assert streamed.status_code == 413


def test_too_many_files_and_zip_bombs_are_refused_with_413(models: Path, series: Path) -> None:
    client = make_client(models, max_files=5, max_unzipped_bytes=1024 * 1024)
    response = client.post("/predict/bright-spot", headers=AUTH, files=dicom_parts(series))
    assert response.status_code == 413 and "5" in response.json()["detail"]
    many = zip_of({f"{i}.dcm": b"x" for i in range(6)})
    response = client.post("/predict/bright-spot", headers=AUTH, files={"files": ("a.zip", many)})
    assert response.status_code == 413
    bomb = zip_of({"a.dcm": b"\0" * (8 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    response = client.post("/predict/bright-spot", headers=AUTH, files={"files": ("b.zip", bomb)})
    assert response.status_code == 413 and "unpacks" in response.json()["detail"]


@pytest.mark.parametrize(
    "entries,symlink",
    [
        ({"ok.dcm": b"x", "../../escaped.dcm": b"x"}, None),
        ({"/tmp/absolute.dcm": b"x"}, None),
        ({"C:/windows/evil.dcm": b"x"}, None),
        ({"series/..\\..\\escaped.dcm": b"x"}, None),
        ({"ok.dcm": b"x"}, "link.dcm"),
    ],
)
def test_zip_slip_is_refused(models: Path, tmp_path: Path, entries, symlink) -> None:
    client = make_client(models)
    archive = zip_of(entries, symlink)
    response = client.post(
        "/predict/bright-spot", headers=AUTH, files={"files": ("evil.zip", archive)}
    )
    assert response.status_code == 400
    assert "refused" in response.json()["detail"]
    assert not list(Path("/tmp").glob("escaped.dcm")) and not Path("/tmp/absolute.dcm").exists()


def test_burst_beyond_the_queue_gets_503_and_slow_requests_504(models: Path, series: Path) -> None:
    client = make_client(models, workers=1, queue_size=1)
    admission = client.app.state.admission
    held = [admission.try_enter(), admission.try_enter()]  # pool and queue full
    assert admission.try_enter() is None
    response = client.post("/predict/bright-spot", headers=AUTH, files=dicom_parts(series))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    for ticket in held:
        ticket.release()
    assert (
        client.post("/predict/bright-spot", headers=AUTH, files=dicom_parts(series)).status_code
        == 200
    )
    assert admission.count == 0
    write_bright_spot_model(models, delay_s=1.0)  # every prediction now outlives the timeout
    slow = make_client(models, request_timeout_s=0.2)
    response = slow.post("/predict/bright-spot", headers=AUTH, files=dicom_parts(series))
    assert response.status_code == 504


def test_access_log_has_no_phi(
    models: Path, series: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(models)
    with caplog.at_level(logging.INFO, logger="medplug.serve"):
        client.post(
            "/predict/bright-spot?output=json&patient=Doe_John",
            headers=AUTH,
            files=dicom_parts(series),
            data={
                "report": "Mr Doe has a nodule.",
                "clinical": '{"age": 61, "smoking": "Quietly-Former"}',
            },
        )
        client.post(
            "/predict/bright-spot",
            headers=AUTH,
            files={"files": ("Doe_John.dcm", b"junk")},
        )
    lines = [record.getMessage() for record in caplog.records]
    assert any("POST /predict/{plugin} 200" in line for line in lines)
    assert any("POST /predict/{plugin} 422" in line for line in lines)
    joined = "\n".join(lines)
    for phi in ("Doe", "Viewer^Test", "VIEW001", "nodule", "Quietly-Former", "patient="):
        assert phi not in joined


# ----------------------------------------------------------------- real uvicorn


def test_real_uvicorn_on_loopback(models: Path, series: Path, series_zip: bytes) -> None:
    app = create_app(ServeSettings(token=TOKEN, models_dir=models, max_upload_bytes=1 << 20))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/plugins").status_code == 401
        big = http.post(
            "/predict/bright-spot",
            headers=AUTH,
            files={"files": ("big.dcm", b"\0" * (2 << 20))},
        )
        assert big.status_code == 413
        slip = zip_of({"../escaped.dcm": b"x"})
        refused = http.post("/predict/bright-spot", headers=AUTH, files={"files": ("s.zip", slip)})
        assert refused.status_code == 400
        ok = http.post(
            "/predict/bright-spot",
            headers=AUTH,
            files={"files": ("study.zip", series_zip, "application/zip")},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["label"] == "lesion"
        assert ok.headers["x-request-id"]


def test_insecure_local_binds_loopback_only(models: Path) -> None:
    import psutil

    env = dict(os.environ, MEDPLUG_MODELS=str(models))
    env.pop("MEDPLUG_SERVE_TOKEN", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medplug.cli.main",
            "serve",
            "--insecure-local",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        listening: list = []
        for line in process.stdout:
            if "Uvicorn running" in line:  # printed once the socket listens
                listening = [
                    conn.laddr
                    for conn in psutil.Process(process.pid).net_connections()
                    if conn.status == psutil.CONN_LISTEN
                ]
                break
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        port = listening[0].port
        assert httpx.get(
            f"http://127.0.0.1:{port}/plugins", timeout=120
        )  # first call imports every plugin.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_core_and_server_do_not_import_napari() -> None:
    code = (
        "import sys, medplug.cli.main, medplug.serve, medplug.napari_plugin.geometry; "
        "bad = [m for m in ('napari', 'PyQt5', 'qtpy') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.orthanc
def test_dicomweb_study_reference_is_fetched_and_predicted(
    models: Path, series: Path, tmp_path: Path
) -> None:
    from viewer_support import ORTHANC, ORTHANC_DICOMWEB, start_orthanc

    if not (Path(ORTHANC).exists() and Path(ORTHANC_DICOMWEB).exists()):
        pytest.skip("needs the Debian packages orthanc and orthanc-dicomweb")
    import pydicom

    process, orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        for path in sorted(series.iterdir()):
            httpx.post(orthanc + "/instances", content=path.read_bytes()).raise_for_status()
        study_uid = pydicom.dcmread(next(series.iterdir())).StudyInstanceUID
        client = make_client(models, dicomweb_url=orthanc + "/dicom-web")
        response = client.post("/predict/bright-spot", headers=AUTH, data={"study_uid": study_uid})
        assert response.status_code == 200, response.text
        assert response.json()["label"] == "lesion"
        assert response.json()["explanation"]["heatmap"]["shape"] == [40, 32, 12]
        missing = client.post("/predict/bright-spot", headers=AUTH, data={"study_uid": "1.2.3.4"})
        assert missing.status_code == 422 and "DICOMweb retrieve failed" in missing.text
        bad = client.post("/predict/bright-spot", headers=AUTH, data={"study_uid": "1.2;rm"})
        assert bad.status_code == 422
        without = make_client(models).post(
            "/predict/bright-spot", headers=AUTH, data={"study_uid": study_uid}
        )
        assert without.status_code == 400 and "--dicomweb-url" in without.text
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_structured_report_output(models: Path, series: Path, tmp_path: Path) -> None:
    pytest.importorskip("medplug.dicom_out.sr")
    import pydicom

    client = make_client(models)
    response = client.post(
        "/predict/bright-spot?output=sr", headers=AUTH, files=dicom_parts(series)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(response.content))
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert len(referenced) == 12
    assert "bright-spot" in str(sr.ContentSequence)
    if shutil.which("dciodvfy"):  # dicom3tools: the SR must validate without errors
        (tmp_path / "sr.dcm").write_bytes(response.content)
        check = subprocess.run(
            ["dciodvfy", str(tmp_path / "sr.dcm")], capture_output=True, text=True
        )
        errors = [line for line in (check.stdout + check.stderr).splitlines() if "Error" in line]
        assert not errors, errors
    nifti = write_nifti(tmp_path / "ct.nii.gz", phantom())
    refused = client.post(
        "/predict/bright-spot?output=sr",
        headers=AUTH,
        files={"files": ("ct.nii.gz", nifti.read_bytes())},
    )
    assert refused.status_code == 400 and "needs DICOM input" in refused.text
