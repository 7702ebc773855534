"""Worker-side work for one study: fetch it if remote, decode it into a ``Case``.

Runs in worker processes, so everything in and out is picklable and nothing
depends on the parent's state. A failure becomes ``LoadedStudy.error`` with a
specific reason; it never escapes and never stops the batch.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medplug.batch.dicomweb import RetryCount, RetryPolicy, retrieve_study
from medplug.batch.locators import (
    DicomwebLocator,
    FolderLocator,
    StudyLocator,
    locator_from_json,
)
from medplug.batch.spooled_arrays import discard_spooled, spool_images
from medplug.batch.storage import storage_problem
from medplug.contract import Case, ClinicalValue
from medplug.dicom_out.evidence import StudyEvidence, study_evidence
from medplug.error_categories import EMPTY_STUDY, FETCH_FAILED
from medplug.errors import DicomError, MedplugError


@dataclass
class LoadJob:
    """Everything a worker needs for one study (picklable)."""

    key: str
    case_id: str
    locator: StudyLocator  # (the journal's JSON form is accepted and converted)
    report: str | None = None
    clinical: dict[str, ClinicalValue] = field(default_factory=dict)
    rules: dict[str, Any] | None = None
    spool_dir: str | None = None
    # Set when the job runs in a worker process: decoded arrays are written there and
    # mapped by the parent instead of being pickled through the pipe (spooled_arrays).
    array_dir: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # DICOMweb fetches

    def __post_init__(self) -> None:
        if isinstance(self.locator, dict):
            self.locator = locator_from_json(self.locator)


@dataclass
class LoadedStudy:
    """A decoded study (or why it could not be), plus what an SR must cite."""

    key: str
    case: Case | None = None
    evidence: StudyEvidence | None = None
    error: dict[str, str] | None = None
    load_s: float = 0.0
    spooled: list[str | None] = field(default_factory=list)  # per image, see LoadJob.array_dir
    retries: int = 0  # network retries the fetch needed


def error_info(stage: str, exc: BaseException) -> dict[str, str]:
    """A specific, PHI-free reason: the medplug category, else the exception type.

    A full disk (anywhere) or an unwritable output (``output`` stage) gets the
    ``storage`` reasons, which stop a batch instead of failing the study.
    """
    problem = storage_problem(exc, writing=stage == "output")
    if problem is not None:
        return {"stage": stage, "reason": problem[0], "message": problem[1][:500]}
    if isinstance(exc, DicomError):
        reason = exc.category
    elif isinstance(exc, MedplugError):
        reason = type(exc).__name__
    else:
        reason = f"unexpected {type(exc).__name__}"
    return {"stage": stage, "reason": reason, "message": str(exc)[:500]}


def load_study(job: LoadJob) -> LoadedStudy:
    """Fetch and decode one study; never raises."""
    started = time.perf_counter()
    loaded = LoadedStudy(key=job.key)
    spooled: Path | None = None
    try:
        locator = job.locator
        if isinstance(locator, DicomwebLocator):
            count = RetryCount()
            try:
                spooled = fetch_dicomweb(job, count)
            finally:
                loaded.retries = count.retries
            files = sorted(str(p) for p in spooled.iterdir())
        elif isinstance(locator, FolderLocator):
            files = sorted(str(p) for p in Path(locator.path).rglob("*") if p.is_file())
        else:
            files = list(locator.files)
        if not files:
            raise DicomError(None, EMPTY_STUDY, "the study has no instances")
        loaded.case, loaded.evidence = decode_case(files, job)
        if job.array_dir:
            loaded.spooled = spool_images(loaded.case, job.array_dir, job.case_id)
    except Exception as exc:  # one bad study must never stop the batch
        discard_spooled(loaded.spooled)
        loaded.case, loaded.spooled = None, []
        loaded.error = error_info("load", exc)
    finally:
        if spooled is not None:
            shutil.rmtree(spooled, ignore_errors=True)
    loaded.load_s = time.perf_counter() - started
    return loaded


def fetch_dicomweb(job: LoadJob, count: RetryCount | None = None) -> Path:
    """WADO-RS retrieve of the whole study, as stored, into a private spool folder."""
    locator = job.locator
    if not isinstance(locator, DicomwebLocator):
        raise ValueError("not a DICOMweb study")
    if not job.spool_dir:
        raise ValueError("a DICOMweb study needs a spool folder")
    target = Path(job.spool_dir) / job.case_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        retrieve_study(locator.url, locator.study_uid, target, job.retry, count or RetryCount())
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)
        if storage_problem(exc, writing=False) is not None:
            raise
        raise DicomError(None, FETCH_FAILED, str(exc)) from exc
    return target


def decode_case(files: list[str], job: LoadJob) -> tuple[Case, StudyEvidence]:
    """Decode the study's image series into a ``Case`` with the manifest's report/fields.

    The folder is scanned once; the same headers pick the series, give its
    geometry and become the SR evidence.
    """
    from medplug.ingest import load_case, load_image, scan_folder

    folder = _single_folder(files, job)
    scan = scan_folder(folder, workers=1)
    image = load_image(folder, job.rules, scan=scan)
    case = load_case(None, case_id=job.case_id, report=job.report, clinical=job.clinical)
    case.images.append(image)
    return case, study_evidence(scan, image)


def _single_folder(files: list[str], job: LoadJob) -> Path:
    """A folder holding exactly this study's files: theirs if they share one, else links."""
    parents = {Path(f).parent for f in files}
    if len(parents) == 1:
        parent = parents.pop()
        if sum(1 for p in parent.iterdir() if p.is_file()) == len(files):
            return parent
    if not job.spool_dir:
        raise ValueError("a study spread over folders needs a spool folder")
    target = Path(job.spool_dir) / f"{job.case_id}-links"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for number, path in enumerate(files):
        (target / f"{number:05d}.dcm").symlink_to(Path(path).resolve())
    return target
