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

import pydicom
from pydicom.dataset import Dataset

from medplug.contract import Case, ClinicalValue
from medplug.errors import DicomError, MedplugError


@dataclass
class LoadJob:
    """Everything a worker needs for one study (picklable)."""

    key: str
    case_id: str
    locator: dict[str, Any]
    report: str | None = None
    clinical: dict[str, ClinicalValue] = field(default_factory=dict)
    rules: dict[str, Any] | None = None
    spool_dir: str | None = None


@dataclass
class LoadedStudy:
    """A decoded study (or why it could not be), plus the headers an SR must cite."""

    key: str
    case: Case | None = None
    evidence: list[Dataset] = field(default_factory=list)
    error: dict[str, str] | None = None
    load_s: float = 0.0


def error_info(stage: str, exc: BaseException) -> dict[str, str]:
    """A specific, PHI-free reason: the medplug category, else the exception type."""
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
        files = job.locator.get("files")
        if job.locator["kind"] == "dicomweb":
            spooled = fetch_dicomweb(job)
            files = sorted(str(p) for p in spooled.iterdir())
        elif job.locator["kind"] == "folder":
            files = sorted(str(p) for p in Path(job.locator["path"]).rglob("*") if p.is_file())
        if not files:
            raise DicomError(None, "empty-study", "the study has no instances")
        loaded.case = decode_case(files, job)
        loaded.evidence = evidence_headers(files, loaded.case)
    except Exception as exc:  # one bad study must never stop the batch
        loaded.case = None
        loaded.error = error_info("load", exc)
    finally:
        if spooled is not None:
            shutil.rmtree(spooled, ignore_errors=True)
    loaded.load_s = time.perf_counter() - started
    return loaded


def fetch_dicomweb(job: LoadJob) -> Path:
    """WADO-RS retrieve of the whole study into a private spool folder."""
    from dicomweb_client.api import DICOMwebClient

    if not job.spool_dir:
        raise ValueError("a DICOMweb study needs a spool folder")
    target = Path(job.spool_dir) / job.case_id
    target.mkdir(parents=True, exist_ok=True)
    client = DICOMwebClient(url=job.locator["url"])
    try:
        instances = client.retrieve_study(job.locator["study_uid"])
    except Exception as exc:
        raise DicomError(None, "fetch-failed", f"WADO-RS retrieve failed ({exc})") from exc
    for number, dataset in enumerate(instances):
        dataset.save_as(target / f"{number:05d}.dcm", enforce_file_format=False)
    return target


def decode_case(files: list[str], job: LoadJob) -> Case:
    """Decode the study's image series into a ``Case`` with the manifest's report/fields."""
    from medplug.ingest import load_case

    folder = _single_folder(files, job)
    return load_case(folder, case_id=job.case_id, report=job.report, clinical=job.clinical,
                     rules=job.rules)  # fmt: skip


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


def evidence_headers(files: list[str], case: Case) -> list[Dataset]:
    """Headers (no pixels) of the instances the selected image came from."""
    image = case.image
    wanted = set(image.sop_uids) if image is not None else set()
    headers = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if not wanted or str(ds.get("SOPInstanceUID", "")) in wanted:
            headers.append(ds)
    if image is not None and image.series_uid:
        headers = [ds for ds in headers if ds.get("SeriesInstanceUID") == image.series_uid]
    return headers
