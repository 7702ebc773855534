"""``?output=sr``: the prediction as a DICOM Structured Report, via ``medplug.batch``.

The SR is built by the same code batch jobs use (``medplug.batch.sr.build_sr``), from
the headers of the uploaded instances the plugin actually read, so it lands in the
source study when a viewer stores it back to the PACS.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from fastapi import HTTPException
from pydicom.errors import InvalidDicomError

from medplug.contract import Case, Prediction

# Patient/study attributes the SR copies from its evidence. They are Type 2 (must be
# present, may be empty) but some exporters drop them; empty ones keep the SR valid.
TYPE2_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def structured_report(case: Case, prediction: Prediction, input_path: Path) -> bytes:
    """DICOM Part 10 bytes of an SR describing ``prediction`` for the study at ``input_path``."""
    image = case.image
    if image is None or not image.sop_uids:
        raise HTTPException(400, "DICOM SR output needs DICOM input (not NIfTI or text only)")
    try:
        from medplug.batch.sr import build_sr
    except ImportError as exc:
        raise HTTPException(501, "DICOM SR output needs medplug.batch") from exc
    wanted = set(image.sop_uids)
    evidence = []
    files = sorted(input_path.rglob("*")) if input_path.is_dir() else [input_path]
    for file in files:
        if not file.is_file():
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if header.get("SOPInstanceUID") in wanted:
            evidence.append(_with_type2_study_attributes(header))
    sr = build_sr([prediction], evidence)
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_type2_study_attributes(header: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in TYPE2_STUDY_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, "")
    return header
