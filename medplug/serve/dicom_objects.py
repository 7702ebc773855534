"""``?output=sr|pm|seg|dicom``: the prediction as DICOM objects, built as batch builds them.

The request's study gets the same treatment as a batch study: the evidence is
prepared by ``medplug.dicom_out.evidence`` from the uploaded (or fetched)
instances the plugin read, and ``medplug.dicom_out.job`` builds the SR, the
heatmap's Parametric Map and the plugin's SEG, so each lands in the source
study when a viewer stores it back to the PACS. ``dicom`` answers all of them
in one zip: only there does the SR's segment volume cite a SEG the client gets.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from fastapi import HTTPException

from medplug.contract import Case, Prediction

KINDS = ("sr", "pm", "seg", "dicom")
ZIP_NAMES = {"sr": "sr.dcm", "heatmap": "pm.dcm", "seg": "seg.dcm"}


def dicom_objects(case: Case, prediction: Prediction, input_path: Path, kind: str) -> bytes:
    """DICOM Part 10 bytes of the SR, PM or SEG of ``prediction``, or a zip of all (``dicom``)."""
    from pydicom.uid import generate_uid

    from medplug.dicom_out.evidence import evidence_for_path
    from medplug.dicom_out.grid import on_image_grid
    from medplug.dicom_out.job import DicomOutputJob, write_dicom_outputs
    from medplug.dicom_out.sr import SrIdentity

    image = case.image
    if image is None or not image.sop_uids:
        raise HTTPException(400, "DICOM output needs DICOM input (not NIfTI or text only)")
    if kind == "seg" and prediction.segmentation is None:
        raise HTTPException(400, f"plugin {prediction.plugin!r} returned no segmentation")
    has_heatmap = prediction.explanation is not None and prediction.explanation.heatmap is not None
    if kind == "pm" and not has_heatmap:
        raise HTTPException(400, f"plugin {prediction.plugin!r} returned no heatmap")
    with tempfile.TemporaryDirectory(prefix="medplug-dicom-out-") as tmp:
        job = DicomOutputJob(
            study="upload",
            predictions=[prediction],
            evidence=evidence_for_path(input_path, image),
            output_root=Path(tmp),
            sr_identity=SrIdentity.new() if kind in ("sr", "dicom") else None,
            sc_series_uid=generate_uid(),
            sc_sop_seed=generate_uid(),
            heatmaps={prediction.plugin: on_image_grid(prediction, image)}
            if has_heatmap and kind in ("pm", "dicom")
            else {},
            write_fhir=False,
        )
        if kind == "pm" or kind == "sr":  # a lone SR cites no SEG the client never gets
            job.predictions = [_without_segmentation(prediction)]
        result = write_dicom_outputs(job)
        problems = ([result.error] if result.error else []) + result.object_errors
        if problems:
            raise HTTPException(422, f"cannot build the DICOM output: {problems[0]['message']}")
        wanted = {
            "sr": ["sr"],
            "pm": [f"heatmap:{prediction.plugin}"],
            "seg": [f"seg:{prediction.plugin}"],
        }.get(kind, [name for name in result.files if name != "fhir"])
        files = {name: Path(tmp) / result.files[name] for name in wanted}
        if kind != "dicom":
            return next(iter(files.values())).read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, path in files.items():
                archive.write(path, ZIP_NAMES[name.split(":")[0]])
        return buffer.getvalue()


def _without_segmentation(prediction: Prediction) -> Prediction:
    import dataclasses

    return dataclasses.replace(prediction, segmentation=None)
