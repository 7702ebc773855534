"""Entry points most callers use: ``load_image`` (one path -> one volume) and ``load_case``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medplug.contract import Case, ClinicalValue, ImageVolume
from medplug.errors import InputError
from medplug.ingest.errors import (
    DicomError,
    NoImageSeriesError,
    NotAnImageError,
    NotDicomError,
    TruncatedDicomError,
    UnreadableDicomError,
)
from medplug.ingest.guard import quiet_warnings
from medplug.ingest.nifti import is_nifti, load_nifti
from medplug.ingest.scan import ScanResult, scan_folder
from medplug.ingest.selection import RulesSource, SeriesSelection, select_series
from medplug.ingest.series import load_series

# Series tried before giving up when the best-ranked ones fail to load.
MAX_LOAD_ATTEMPTS = 8


@dataclass
class LoadAttempt:
    """One selected series that was tried, and the error if it did not load."""

    selection: SeriesSelection
    error: DicomError | None = None


def load_selected(
    scan: ScanResult,
    rules: RulesSource = None,
    *,
    allow_tilt: bool = False,
    c_order: bool = False,
) -> tuple[ImageVolume | None, list[LoadAttempt]]:
    """Load the best-ranked series that loads; every attempt is returned with its error.

    One function for ``load_image``, ``medplug predict`` and ``medplug inspect``,
    so what inspect says would load is what predict loads. A failed series is
    reported (category and message) and the next-ranked one is tried.
    """
    attempts: list[LoadAttempt] = []
    selections = select_series(scan, rules)
    for chosen in selections[:MAX_LOAD_ATTEMPTS]:
        try:
            volume = load_series(chosen.series, allow_tilt=allow_tilt, c_order=c_order)
        except DicomError as exc:
            attempts.append(LoadAttempt(chosen, exc))
            continue
        attempts.append(LoadAttempt(chosen))
        volume.meta["selection"] = {
            "rule": chosen.rule,
            "reasons": chosen.reasons,
            "candidates": len(selections),
            "failed": [
                {"series": a.selection.series.short_uid, "category": a.error.category}
                for a in attempts
                if a.error is not None
            ],
        }
        for failed in attempts[:-1]:  # every attempt before the one that loaded failed
            if failed.error is None:
                continue
            volume.meta["warnings"].append(
                f"series {failed.selection.series.number} ({failed.selection.series.short_uid}) "
                f"ranked higher but failed to load: {failed.error.category}"
            )
        return volume, attempts
    return None, attempts


def load_image(
    path: str | Path,
    rules: RulesSource = None,
    *,
    allow_tilt: bool = False,
    scan: ScanResult | None = None,
    c_order: bool = False,
) -> ImageVolume:
    """A NIfTI file, a DICOM file, or the best series of a DICOM folder, as one volume.

    For a folder the series is picked by ``select_series(scan, rules)``; when
    it fails to load the next-ranked one is tried (``load_selected``). The
    volume's ``meta["selection"]`` records which rule chose it, why, and which
    higher-ranked series failed. ``c_order``: memory layout only (same array
    values; see ``load_series``), for callers that copy the volume to C order.
    """
    path = Path(path)
    if not path.exists():
        raise DicomError(path, "not_found", "no such file or folder")
    if path.is_file() and is_nifti(path):
        return load_nifti(path)
    with quiet_warnings(path):
        scan = scan if scan is not None else scan_folder(path)
        if path.is_file() and scan.skipped:
            raise _skip_as_error(scan)
        volume, attempts = load_selected(scan, rules, allow_tilt=allow_tilt, c_order=c_order)
    if volume is not None:
        return volume
    if not attempts:
        raise NoImageSeriesError(path, _nothing_loadable(scan))
    raise _all_failed(attempts)


def _all_failed(attempts: list[LoadAttempt]) -> DicomError:
    """The best-ranked series' error, saying which others failed too."""
    first = attempts[0].error
    assert first is not None
    if len(attempts) == 1:
        return first
    others = ", ".join(sorted({a.error.category for a in attempts[1:] if a.error}))
    error = type(first).__new__(type(first))
    DicomError.__init__(
        error,
        first.path,
        first.category,
        f"{first.detail} (the {len(attempts) - 1} next-ranked series failed too: {others})",
    )
    return error


def _skip_as_error(scan: ScanResult) -> DicomError:
    skipped = scan.skipped[0]
    if skipped.category == "not_dicom":
        return NotDicomError(skipped.path, skipped.reason)
    if skipped.category == "unreadable":
        return UnreadableDicomError(skipped.path, skipped.reason)
    if skipped.category == "truncated":
        return TruncatedDicomError(skipped.path, skipped.reason)
    return NotAnImageError(skipped.path, f"{skipped.category}: {skipped.reason}")


def _nothing_loadable(scan: ScanResult) -> str:
    if not scan.series and not scan.skipped:
        return "no files found"
    counts: dict[str, int] = {}
    for skipped in scan.skipped:
        counts[skipped.category] = counts.get(skipped.category, 0) + 1
    summary = ", ".join(f"{n} {category}" for category, n in sorted(counts.items()))
    if scan.series:
        return (
            f"no series matches the selection rules ({len(scan.series)} series; "
            f"skipped: {summary or 'none'})"
        )
    return f"no image series among {scan.n_files} files (skipped: {summary})"


def load_case(
    path: str | Path | None,
    case_id: str | None = None,
    report: str | Path | None = None,
    clinical: Mapping[str, ClinicalValue] | str | Path | None = None,
    rules: RulesSource = None,
) -> Case:
    """A ``Case`` from an image path (DICOM folder/file or NIfTI), a report and clinical fields.

    ``report``: text, or a path to a text file. ``clinical``: a mapping, JSON
    text, or a path to a JSON file. Any of the three may be missing.
    """
    images = []
    if path is not None:
        images.append(load_image(path, rules))
    if case_id is None:
        case_id = _case_id_from_path(Path(path)) if path is not None else "case"
    return Case(
        case_id=case_id,
        images=images,
        report=_read_report(report, case_id),
        clinical=_read_clinical(clinical, case_id),
    )


def _case_id_from_path(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_report(report: str | Path | None, case_id: str) -> str | None:
    if report is None:
        return None
    if isinstance(report, Path) or (
        len(str(report)) < 4096 and "\n" not in str(report) and Path(str(report)).is_file()
    ):
        try:
            return Path(report).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"cannot read report file ({exc.strerror})", case_id=case_id) from None
    return str(report)


def _read_clinical(
    clinical: Mapping[str, ClinicalValue] | str | Path | None, case_id: str
) -> dict[str, ClinicalValue]:
    if clinical is None:
        return {}
    if isinstance(clinical, Path) or (
        isinstance(clinical, str) and not clinical.lstrip().startswith("{")
    ):
        try:
            clinical = Path(clinical).read_text()
        except OSError as exc:
            raise InputError(
                f"cannot read clinical JSON file ({exc.strerror})", case_id=case_id
            ) from None
    if isinstance(clinical, str):
        try:
            clinical = json.loads(clinical)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"clinical fields are not valid JSON ({exc.msg})", case_id=case_id
            ) from None
    if not isinstance(clinical, Mapping):
        raise InputError("clinical fields must be a JSON object of name -> value", case_id=case_id)
    fields: dict[str, ClinicalValue] = {}
    for name, value in clinical.items():
        if isinstance(value, bool):
            value = int(value)
        elif value is not None and not isinstance(value, int | float | str):
            raise InputError(
                f"clinical field {name!r} must be a number, a string or null", case_id=case_id
            )
        fields[str(name)] = value
    return fields
