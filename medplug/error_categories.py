"""Every failure category medplug reports, in one place, for every layer.

A category is a short, stable string that batch jobs, tests and dashboards group
failures by: ``DicomError.category``, ``ScanResult.skipped[i].category`` and the
``reason`` of an error record in a batch's ``results.jsonl`` / ``summary.csv``.
They are a public interface and never change once released, which is why the
ingest ones are snake_case and the batch ones (older, already in users' outputs)
keep their hyphens. Raise sites use a string listed here (ingest's helpers assert
it) or one of the constants below; ``tests/test_error_categories.py`` reads the
source tree and fails on any category that is not registered here and in the docs
(docs/ingest.md, docs/batch.md).
"""

from __future__ import annotations

# Why the folder scan skipped a file (ScanResult.skipped[i].category).
SKIP_CATEGORIES: dict[str, str] = {
    "not_dicom": "not a DICOM file (no DICM prefix and no readable data set)",
    "unreadable": "DICOM header is truncated or malformed",
    "dicomdir": "DICOMDIR media directory, not an image",
    "structured_report": "structured report (SR) document",
    "presentation_state": "presentation state (display settings, no pixels)",
    "segmentation": "segmentation object (SEG), a label map rather than an image",
    "radiotherapy": "radiotherapy object (RT structure set, plan, dose, image)",
    "waveform": "waveform (ECG, audio, hemodynamic)",
    "key_object": "key object selection document",
    "encapsulated_document": "encapsulated document (PDF, CDA, STL, ...)",
    "non_image": "other non-image object (raw data, registration, ...)",
    "no_pixel_data": "image object without pixel data",
    "missing_uid": "no Series/SOP Instance UID, cannot be grouped",
    "truncated": "file ends inside its header (cut short in transfer or on disk)",
}

# Why a series or file could not be turned into a volume (DicomError.category).
LOAD_CATEGORIES: dict[str, str] = {
    "not_dicom": "file is not DICOM",
    "unreadable": "header or pixel data is truncated or malformed",
    "not_an_image": "object has no pixel data to load",
    "unsupported_transfer_syntax": "no installed decoder handles the compression",
    "decode_failed": "decoder failed on the pixel data (corrupt or truncated stream)",
    "unsupported_pixel_format": "pixel layout medplug does not turn into a volume",
    "missing_slices": "gap in slice positions consistent with missing files",
    "uneven_spacing": "slice positions are not evenly spaced",
    "duplicate_positions": "several slices share a position (echoes, phases, repeats)",
    "gantry_tilt": "slices are sheared (gantry or detector tilt)",
    "mixed_orientation": "slices have different ImageOrientationPatient",
    "mixed_size": "slices have different Rows/Columns",
    "mixed_pixel_spacing": "slices have different PixelSpacing",
    "missing_geometry": "multi-slice series without ImagePositionPatient/Orientation",
    "empty_series": "no loadable image in the selection",
    "not_found": "path does not exist",
    "unsupported_file": "file type medplug does not read",
    "truncated": "file ends before its header or pixel data does",
    "too_large": "declared image size is beyond the size limit or the data present",
    "bad_pixel_description": "Rows/Columns/Bits/Samples/Frames impossible or inconsistent",
    "bad_geometry": "position/orientation/spacing not finite, wrong count or degenerate",
    "bad_rescale": "RescaleSlope/Intercept not finite, or slope zero",
    "bad_lookup_table": "palette or modality lookup table malformed",
    "duplicate_instances": "files share a SOP Instance UID but differ in size or geometry",
}

# Batch-only reasons (results.jsonl ``errors[i].reason``), besides the load categories.
EMPTY_STUDY = "empty-study"
FETCH_FAILED = "fetch-failed"
DISK_FULL = "disk-full"
NOT_WRITABLE = "not-writable"

BATCH_CATEGORIES: dict[str, str] = {
    EMPTY_STUDY: "the study has no instances (empty folder or DICOMweb study)",
    FETCH_FAILED: "the DICOMweb retrieve failed after its retries",
    DISK_FULL: "the output, journal or spool disk is full: the batch stops",
    NOT_WRITABLE: "the output folder or journal cannot be written: the batch stops",
}

# Every category any layer may report, with its description.
ALL_CATEGORIES: dict[str, str] = {**SKIP_CATEGORIES, **LOAD_CATEGORIES, **BATCH_CATEGORIES}

__all__ = [
    "ALL_CATEGORIES",
    "BATCH_CATEGORIES",
    "DISK_FULL",
    "EMPTY_STUDY",
    "FETCH_FAILED",
    "LOAD_CATEGORIES",
    "NOT_WRITABLE",
    "SKIP_CATEGORIES",
]
