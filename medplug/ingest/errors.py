"""Ingest failures, each with a stable ``category`` string (see docs/ingest.md).

``DicomError`` and ``SeriesGeometryError`` come from ``medplug.errors``; the
subclasses here only make common cases catchable by type. Categories are part
of the public interface: batch jobs and tests group failures by them, so they
never change once released.
"""

from __future__ import annotations

from pathlib import Path

from medplug.errors import DicomError, MedplugError, SeriesGeometryError

# Why a file was skipped by the folder scan (ScanResult.skipped[i].category).
SKIP_CATEGORIES = {
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
LOAD_CATEGORIES = {
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


class NotDicomError(DicomError):
    """The file is not DICOM at all."""

    def __init__(self, path: str | Path | None, detail: str = "no DICOM data set found") -> None:
        super().__init__(path, "not_dicom", detail)


class UnreadableDicomError(DicomError):
    """The header or pixel data is truncated or malformed."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "unreadable", detail)


class NotAnImageError(DicomError):
    """A DICOM object without pixel data (SR, PR, RT plan, ...) was asked for as an image."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "not_an_image", detail)


class UnsupportedTransferSyntaxError(DicomError):
    """No installed decoder handles the file's compression."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "unsupported_transfer_syntax", detail)


class PixelDecodeError(DicomError):
    """A decoder exists but failed on the data (corrupt or truncated stream)."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "decode_failed", detail)


class UnsupportedPixelFormatError(DicomError):
    """Pixel layout medplug does not turn into a volume (e.g. mixed colour/grey)."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "unsupported_pixel_format", detail)


class NoImageSeriesError(DicomError):
    """A folder or selection holds no series that can be loaded."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "empty_series", detail)


class TruncatedDicomError(DicomError):
    """The file ends before its header or pixel data does."""

    def __init__(self, path: str | Path | None, detail: str) -> None:
        super().__init__(path, "truncated", detail)


def ingest_error(path: str | Path | None, category: str, detail: str) -> DicomError:
    """A ``DicomError`` with a category from ``LOAD_CATEGORIES`` (checked)."""
    assert category in LOAD_CATEGORIES, category
    return DicomError(path, category, detail)


def geometry_error(path: str | Path | None, category: str, detail: str) -> SeriesGeometryError:
    """A ``SeriesGeometryError`` with one of the geometry categories above."""
    assert category in LOAD_CATEGORIES, category
    return SeriesGeometryError(path, category, detail)


__all__ = [
    "LOAD_CATEGORIES",
    "SKIP_CATEGORIES",
    "DicomError",
    "MedplugError",
    "NoImageSeriesError",
    "NotAnImageError",
    "NotDicomError",
    "PixelDecodeError",
    "SeriesGeometryError",
    "TruncatedDicomError",
    "UnreadableDicomError",
    "UnsupportedPixelFormatError",
    "UnsupportedTransferSyntaxError",
    "geometry_error",
    "ingest_error",
]
