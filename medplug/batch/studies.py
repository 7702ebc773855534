"""Finding the studies a batch should process, reading headers only.

A study is found once, by its Study Instance UID, and described by a
*locator* (``medplug.batch.locators``): its files for a folder source, the
server and UID for a PACS. The journal stores the locator, so a resumed run
needs no rediscovery to know where a study lives.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from medplug.batch.dicomweb import (
    PacsError,
    RetryCount,
    RetryPolicy,
    SourceUnreachable,
    search_studies,
)
from medplug.batch.locators import DicomwebLocator, FilesLocator, StudyLocator

log = logging.getLogger("medplug.batch")


@dataclass
class StudyTask:
    """One study to run: its UID, accession number (for manifest lookup) and locator."""

    study_uid: str
    accession: str | None
    locator: StudyLocator

    def journal_locator(self) -> dict[str, Any]:
        """What the journal stores: the locator's JSON and the accession (manifest lookup)."""
        return self.locator.to_json() | {"accession": self.accession}


@dataclass
class Discovery:
    """What a source holds: studies, plus files that are not usable DICOM and why."""

    studies: list[StudyTask] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0  # network retries the search needed


def discover_folder(
    root: Path, workers: int | None = None, pool: Executor | None = None
) -> Discovery:
    """Group every DICOM file under ``root`` (recursively) by study, reading headers only.

    Uses ``medplug.ingest.scan_folder``; files it skips (CSV, NIfTI, reports,
    corrupt headers) are listed with its reason, never fatal. The accession
    number (for manifest lookup) is read from one header per study. ``pool``:
    the batch's worker processes, which then read the headers.
    """
    from medplug.ingest import scan_folder

    scan = scan_folder(Path(root), workers=workers, pool=pool)
    discovery = Discovery(skipped=[(str(s.path), s.category) for s in scan.skipped])
    for study in scan.studies:
        paths = sorted(str(i.path) for series in study.series for i in series.instances)
        discovery.studies.append(
            StudyTask(
                study_uid=study.study_uid,
                accession=_accession(paths[0]),
                locator=FilesLocator(tuple(paths)),
            )
        )
    discovery.studies.sort(key=lambda task: _first_file(task.locator))
    return discovery


def _first_file(locator: StudyLocator) -> str:
    return locator.files[0] if isinstance(locator, FilesLocator) else ""


def _accession(path: str) -> str | None:
    """The accession number (for the manifest); pydicom warnings go to the log, as in ingest."""
    from medplug.ingest.guard import quiet_warnings

    try:
        with quiet_warnings(path):
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["AccessionNumber"]
            )
    except Exception:
        return None
    return str(header.get("AccessionNumber", "") or "") or None


def discover_dicomweb(
    url: str, filters: dict[str, str] | None = None, retry: RetryPolicy | None = None
) -> Discovery:
    """List studies with QIDO-RS; ``filters`` are QIDO query keys (e.g. ModalitiesInStudy=CT).

    Transient failures are retried (``retry``); a source that stays unreachable
    raises ``SourceUnreachable`` with one line naming it and the reason.
    """
    discovery, count = Discovery(), RetryCount()
    try:
        for item in search_studies(url, dict(filters or {}), retry or RetryPolicy(), count):
            study = pydicom.Dataset.from_json(item)
            study_uid = str(study.StudyInstanceUID)
            discovery.studies.append(
                StudyTask(
                    study_uid=study_uid,
                    accession=str(study.get("AccessionNumber", "") or "") or None,
                    locator=DicomwebLocator(url, study_uid),
                )
            )
    except PacsError as exc:
        raise SourceUnreachable(f"cannot list the studies of the DICOMweb source: {exc}") from None
    discovery.retries = count.retries
    return discovery
