"""DICOM and NIfTI ingest: scan folders, pick series, load volumes, feed MONAI.

Public API (see docs/ingest.md)::

    scan = scan_folder("study/")                 # headers only, parallel, never raises per file
    chosen = select_series(scan, rules)          # declarative rules, best first, with reasons
    volume = load_series(chosen[0].series)       # float32 (float64 > 24-bit ints), RAS affine
    volume = load_image("study/" or "ct.nii.gz") # one call for the common case
    case = load_case("study/", report=..., clinical=...)
    LoadImage(reader=MedplugDicomReader())       # the same loading inside MONAI pipelines
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medplug.ingest.errors import LOAD_CATEGORIES, SKIP_CATEGORIES
from medplug.ingest.loading import load_case, load_image
from medplug.ingest.nifti import load_nifti, save_nifti
from medplug.ingest.scan import ScanResult, SeriesInfo, SkippedFile, StudyInfo, scan_folder
from medplug.ingest.selection import (
    DEFAULT_RULES,
    RulesSource,
    SelectionRule,
    SelectionRuleError,
    SeriesSelection,
    explain_selection,
    select_series,
)
from medplug.ingest.series import load_series

if TYPE_CHECKING:
    from medplug.ingest.monai_reader import MedplugDicomReader


def __getattr__(name: str) -> Any:
    # MONAI is imported only when the reader is asked for: scans stay light to import.
    if name == "MedplugDicomReader":
        from medplug.ingest.monai_reader import MedplugDicomReader

        return MedplugDicomReader
    raise AttributeError(name)


__all__ = [
    "DEFAULT_RULES",
    "LOAD_CATEGORIES",
    "SKIP_CATEGORIES",
    "MedplugDicomReader",
    "ScanResult",
    "SelectionRule",
    "RulesSource",
    "SelectionRuleError",
    "SeriesInfo",
    "SeriesSelection",
    "SkippedFile",
    "StudyInfo",
    "explain_selection",
    "load_case",
    "load_image",
    "load_nifti",
    "load_series",
    "save_nifti",
    "scan_folder",
    "select_series",
]
