"""Which DICOM objects are images ingest loads, and why the others are skipped."""

from __future__ import annotations

from pydicom import config
from pydicom.uid import UID

from medplug.ingest.header import DICOMDIR_SOP_CLASS, InstanceHeader

# Checked in order against the SOP Class name pydicom knows (e.g. "Basic Text SR Storage").
_NAME_RULES: tuple[tuple[str, str], ...] = (
    ("Presentation State", "presentation_state"),
    ("Segmentation", "segmentation"),
    ("Waveform", "waveform"),
    ("Key Object Selection", "key_object"),
    ("Encapsulated", "encapsulated_document"),
    (" SR ", "structured_report"),
    ("SR Storage", "structured_report"),
    ("RT ", "radiotherapy"),
    ("Raw Data", "non_image"),
    ("Registration", "non_image"),
    ("Surface", "non_image"),
    ("Real World Value Mapping", "non_image"),
    ("Stereometric", "non_image"),
    ("Measurements", "non_image"),
    ("Plan", "non_image"),
    ("Protocol", "non_image"),
    ("Palette", "non_image"),
)
_MODALITY_RULES = {
    "SR": "structured_report",
    "PR": "presentation_state",
    "SEG": "segmentation",
    "RTSTRUCT": "radiotherapy",
    "RTPLAN": "radiotherapy",
    "RTDOSE": "radiotherapy",
    "RTIMAGE": "radiotherapy",
    "RTRECORD": "radiotherapy",
    "KO": "key_object",
    "ECG": "waveform",
    "HD": "waveform",
    "AU": "waveform",
    "DOC": "encapsulated_document",
}


def sop_class_name(uid: str) -> str:
    """Human name of a SOP Class UID, or the UID itself when pydicom does not know it."""
    if not uid:
        return "unknown SOP class"
    name = UID(uid, validation_mode=config.IGNORE).name
    return name if name and name != uid else uid


def skip_reason(header: InstanceHeader) -> tuple[str, str] | None:
    """``(category, reason)`` when the file is not an image ingest loads, else ``None``."""
    if header.media_sop_class_uid == DICOMDIR_SOP_CLASS or header.path.name.upper() == "DICOMDIR":
        return "dicomdir", "DICOMDIR media directory"
    sop_class = header.sop_class_uid or header.media_sop_class_uid
    name = sop_class_name(sop_class)
    for fragment, category in _NAME_RULES:
        if fragment in f" {name} ":
            return category, name
    if header.modality.upper() in _MODALITY_RULES:
        return _MODALITY_RULES[header.modality.upper()], f"{name} (modality {header.modality})"
    if not header.has_pixel_data:
        return "no_pixel_data", f"{name} without Pixel Data"
    if not header.series_uid and not header.sop_instance_uid:
        return "missing_uid", f"{name} without Series and SOP Instance UID"
    return None
