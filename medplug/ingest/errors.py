"""Ingest failures, each with a stable ``category`` string (see docs/ingest.md).

``DicomError`` and ``SeriesGeometryError`` come from ``medplug.errors``; the
subclasses here only make common cases catchable by type. The categories live in
``medplug.error_categories`` (re-exported here as ``LOAD_CATEGORIES`` and
``SKIP_CATEGORIES``); they are part of the public interface: batch jobs and tests
group failures by them, so they never change once released.
"""

from __future__ import annotations

from pathlib import Path

from medplug.error_categories import LOAD_CATEGORIES, SKIP_CATEGORIES
from medplug.errors import DicomError, MedplugError, SeriesGeometryError


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

    # The cut file's Series UID when it came before the cut, so the scan can refuse
    # that series as incomplete; "" when unknown.
    series_uid: str = ""

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
