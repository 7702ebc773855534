"""Scan a folder: read every file's header once, group images into studies and series.

Linear in the number of files: one header read per file (in parallel), then
one dictionary pass to group by Study/Series Instance UID, however many
series share a folder. Files that are not images are kept in
``ScanResult.skipped`` with a stable category and a reason, never dropped
silently and never fatal.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import config
from pydicom.uid import UID

from medplug.ingest.errors import SKIP_CATEGORIES, DicomError
from medplug.ingest.guard import PASS_THROUGH, quiet_warnings, safe_message
from medplug.ingest.header import InstanceHeader, read_header
from medplug.ingest.sop_classes import skip_reason, sop_class_name

# Below this many files a process pool costs more to start than it saves.
PROCESS_POOL_MIN_FILES = 4000
_CHUNK = 256
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class SkippedFile:
    """A file the scan did not group into a series, and why."""

    path: Path
    category: str
    reason: str
    series_uid: str = ""  # of a truncated file, when read before the cut

    @property
    def description(self) -> str:
        return SKIP_CATEGORIES.get(self.category, self.category)


@dataclass
class SeriesInfo:
    """All image files of one series (one Series Instance UID), headers only."""

    series_uid: str
    study_uid: str
    instances: list[InstanceHeader] = field(default_factory=list)
    # Further files with the SOP Instance UID of a file in ``instances`` (copies).
    duplicates: list[InstanceHeader] = field(default_factory=list)
    # Files of this series (by the Series UID read before the cut) that are truncated.
    truncated: list[Path] = field(default_factory=list)

    @property
    def first(self) -> InstanceHeader:
        return self.instances[0]

    @property
    def modality(self) -> str:
        return self.first.modality

    @property
    def description(self) -> str:
        return self.first.series_description

    @property
    def number(self) -> int | None:
        return self.first.series_number

    @property
    def image_type(self) -> tuple[str, ...]:
        return self.first.image_type

    @property
    def n_files(self) -> int:
        return len(self.instances) + len(self.duplicates)

    @property
    def n_slices(self) -> int:
        """Frames across all files: the number of 2D images the series holds."""
        return sum(instance.frames for instance in self.instances)

    @property
    def size_bytes(self) -> int:
        return sum(instance.file_size for instance in (*self.instances, *self.duplicates))

    @property
    def shape(self) -> tuple[int, int]:
        """(columns, rows) of the first image, the in-plane array shape."""
        return (self.first.columns, self.first.rows)

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({instance.transfer_syntax for instance in self.instances})

    @property
    def transfer_syntax_names(self) -> list[str]:
        return [
            UID(uid, validation_mode=config.IGNORE).name if uid else "unknown"
            for uid in self.transfer_syntaxes
        ]

    @property
    def sop_class_name(self) -> str:
        return sop_class_name(self.first.sop_class_uid)

    @property
    def orientation(self) -> str:
        """axial / coronal / sagittal / oblique from the slice normal, or 'unknown'."""
        return orientation_label(self.first.image_orientation)

    @property
    def pixel_spacing(self) -> tuple[float, float] | None:
        """(column spacing, row spacing) in mm, matching the array's (i, j) axes."""
        spacing = self.first.pixel_spacing or self.first.imager_pixel_spacing
        if not spacing or len(spacing) < 2:
            return None
        return (float(spacing[1]), float(spacing[0]))

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between neighbouring slice positions along the normal."""
        orientation = self.first.image_orientation
        positions = [i.image_position for i in self.instances if i.image_position]
        if orientation is None or len(orientation) != 6 or len(positions) < 2:
            return self.first.spacing_between_slices or self.first.slice_thickness
        positions = [p for p in positions if len(p) == 3 and np.all(np.isfinite(p))]
        if len(positions) < 2 or not np.all(np.isfinite(orientation)):
            return None
        normal = np.cross(orientation[:3], orientation[3:])
        distances = np.sort(np.asarray(positions, float) @ normal)
        steps = np.diff(distances)
        steps = steps[steps > 1e-4]
        return float(np.median(steps)) if steps.size else None

    @property
    def spacing(self) -> tuple[float, ...] | None:
        pixel = self.pixel_spacing
        if pixel is None:
            return None
        if self.n_slices > 1 and self.slice_spacing:
            return (*pixel, self.slice_spacing)
        return pixel

    @property
    def short_uid(self) -> str:
        return short_uid(self.series_uid)


@dataclass
class StudyInfo:
    study_uid: str
    series: list[SeriesInfo] = field(default_factory=list)

    @property
    def short_uid(self) -> str:
        return short_uid(self.study_uid)


@dataclass
class ScanResult:
    """What a folder holds: studies with their series, plus every skipped file."""

    root: Path
    studies: list[StudyInfo] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_files: int = 0
    elapsed_s: float = 0.0

    @property
    def series(self) -> list[SeriesInfo]:
        return [series for study in self.studies for series in study.series]

    def find_series(self, series_uid: str) -> SeriesInfo:
        for series in self.series:
            if series.series_uid == series_uid:
                return series
        raise KeyError(series_uid)


def short_uid(uid: str, length: int = 8) -> str:
    """A stable, non-identifying handle for a UID (hash prefix), for tables and logs."""
    if not uid:
        return "-"
    return hashlib.sha1(uid.encode()).hexdigest()[:length]


def orientation_label(orientation: tuple[float, ...] | None) -> str:
    if orientation is None or len(orientation) != 6 or not np.all(np.isfinite(orientation)):
        return "unknown"
    normal = np.abs(np.cross(orientation[:3], orientation[3:]))
    axis = int(np.argmax(normal))
    if normal[axis] < 0.95:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


# --------------------------------------------------------------------------- listing


def list_files(root: Path) -> list[Path]:
    """Every regular file under root (or root itself), hidden files excluded, sorted."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in _IGNORED_NAMES:
                continue
            found.append(Path(directory) / name)
    return found


# --------------------------------------------------------------------------- reading


_Outcome = InstanceHeader | SkippedFile


def _read_one(path: Path) -> _Outcome:
    try:
        with quiet_warnings(path):
            header = read_header(path)
            reason = skip_reason(header)
    except DicomError as exc:
        return SkippedFile(path, exc.category, exc.detail, getattr(exc, "series_uid", ""))
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - one hostile file must not end a scan
        return SkippedFile(path, "unreadable", f"malformed header ({safe_message(exc)})")
    if reason is not None:
        return SkippedFile(path, reason[0], reason[1])
    return header


def _read_chunk(paths: list[Path]) -> list[_Outcome]:
    return [_read_one(path) for path in paths]


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_headers(
    paths: list[Path],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    pool: Executor | None = None,
) -> list[_Outcome]:
    """Read every header, in file order. Processes for big folders, else one thread.

    The header parser is pure Python, so threads do not run it in parallel
    (the GIL); processes do, but cost ~0.1 s to start, which only pays off
    for thousands of files. A caller that already runs worker processes
    (``medplug batch``) passes them as ``pool``: no start-up cost, so they
    are used for anything over one chunk of files.
    """
    chunks = list(_chunks(paths, _CHUNK))
    if pool is not None and len(chunks) > 1:
        return _read_in(pool, chunks, progress)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(paths) < PROCESS_POOL_MIN_FILES:
        results: list[_Outcome] = []
        for chunk in chunks:
            results.extend(_read_chunk(chunk))
            if progress:
                progress(len(chunk))
        return results
    with ProcessPoolExecutor(max_workers=workers) as own_pool:
        return _read_in(own_pool, chunks, progress)


def _read_in(
    pool: Executor, chunks: list[list[Path]], progress: Callable[[int], None] | None
) -> list[_Outcome]:
    results: list[_Outcome] = []
    for chunk_result in pool.map(_read_chunk, chunks):
        results.extend(chunk_result)
        if progress:
            progress(len(chunk_result))
    return results


def group_headers(root: Path, outcomes: Iterable[_Outcome]) -> ScanResult:
    """Group image headers by study and series (one dict pass: linear)."""
    result = ScanResult(root=root)
    by_series: dict[tuple[str, str], SeriesInfo] = {}
    for outcome in outcomes:
        result.n_files += 1
        if isinstance(outcome, SkippedFile):
            result.skipped.append(outcome)
            continue
        # A file without a Series UID is its own series (keyed by its SOP Instance UID).
        series_uid = outcome.series_uid or f"no-series:{outcome.sop_instance_uid}"
        key = (outcome.study_uid, series_uid)
        if key not in by_series:
            by_series[key] = SeriesInfo(series_uid=series_uid, study_uid=outcome.study_uid)
        by_series[key].instances.append(outcome)
    cut_files: dict[str, list[Path]] = {}
    for skipped in result.skipped:
        if skipped.category == "truncated" and skipped.series_uid:
            cut_files.setdefault(skipped.series_uid, []).append(skipped.path)
    for series in by_series.values():
        _set_aside_duplicates(series)
        series.truncated = cut_files.get(series.series_uid, [])
    studies: dict[str, StudyInfo] = {}
    for (study_uid, _), series in by_series.items():
        if study_uid not in studies:
            studies[study_uid] = StudyInfo(study_uid)
        studies[study_uid].series.append(series)
    for study in studies.values():
        study.series.sort(
            key=lambda s: (s.number if s.number is not None else 1 << 30, s.series_uid)
        )
    result.studies = sorted(studies.values(), key=lambda study: study.study_uid)
    return result


def _set_aside_duplicates(series: SeriesInfo) -> None:
    """Keep one file per SOP Instance UID; the others go to ``series.duplicates``.

    The same instance stored twice (a re-send, a copy in another transfer
    syntax) is one image to DICOM, as it is to a PACS. The copy kept is the
    cheapest to read: native little endian first, then the first path.
    ``load_series`` refuses the series when copies disagree in size or geometry.
    """
    by_uid: dict[str, list[InstanceHeader]] = {}
    for instance in series.instances:
        if instance.sop_instance_uid:
            by_uid.setdefault(instance.sop_instance_uid, []).append(instance)
    if all(len(copies) == 1 for copies in by_uid.values()):
        return
    keep: set[int] = set()
    for copies in by_uid.values():
        best = min(copies, key=lambda h: (not h.is_native_little_endian, str(h.path)))
        keep.add(id(best))
        series.duplicates.extend(c for c in copies if c is not best)
    series.instances = [i for i in series.instances if not i.sop_instance_uid or id(i) in keep]


def scan_folder(
    path: str | Path,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    pool: Executor | None = None,
) -> ScanResult:
    """Scan a folder (recursively) or one file; never raises for a bad file.

    ``workers``: processes for the header reads (default: CPU count; 1 = serial).
    ``progress``: called with the number of files just read, for progress bars.
    ``pool``: worker processes the caller already runs, used instead of new ones.
    """
    started = time.perf_counter()
    root = Path(path)
    if not root.exists():
        raise DicomError(root, "not_found", "no such file or folder")
    paths = list_files(root)
    result = group_headers(root, read_headers(paths, workers, progress, pool))
    result.elapsed_s = time.perf_counter() - started
    return result
