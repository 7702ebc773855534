"""Finding the studies a batch should process, reading headers only.

A study is found once, by its Study Instance UID, and described by a
*locator*: a small JSON-able dict a worker process can act on without any
shared state (``{"kind": "files", "files": [...]}`` for a folder source,
``{"kind": "dicomweb", "url": ..., "study_uid": ...}`` for a PACS). The
journal stores the locator, so a resumed run needs no rediscovery to know
where a study lives.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

log = logging.getLogger("medplug.batch")

HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber", "SOPInstanceUID"]


@dataclass
class StudyTask:
    """One study to run: its UID, accession number (for manifest lookup) and locator."""

    study_uid: str
    accession: str | None
    locator: dict[str, Any]


@dataclass
class Discovery:
    """What a source holds: studies, plus files that are not usable DICOM and why."""

    studies: list[StudyTask] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _read_header(path: Path) -> tuple[str, dict[str, str] | str]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return str(path), f"not readable as DICOM ({type(exc).__name__})"
    if "StudyInstanceUID" not in ds:
        return str(path), "no StudyInstanceUID"
    return str(path), {
        "study_uid": str(ds.StudyInstanceUID),
        "accession": str(ds.get("AccessionNumber", "") or ""),
    }


def _candidate_files(root: Path) -> Iterable[Path]:
    for folder, _dirs, files in os.walk(root):
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def discover_folder(root: Path, threads: int = 4) -> Discovery:
    """Group every DICOM file under ``root`` (recursively) by study, headers only.

    Non-DICOM files (CSV, NIfTI, reports next to the images) are listed as
    skipped, never fatal. Studies come out in a stable order (by first file).
    """
    root = Path(root)
    files: dict[str, list[str]] = defaultdict(list)
    accessions: dict[str, str] = {}
    discovery = Discovery()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for path, header in pool.map(_read_header, _candidate_files(root), chunksize=64):
            if isinstance(header, str):
                discovery.skipped.append((path, header))
                continue
            files[header["study_uid"]].append(path)
            accessions.setdefault(header["study_uid"], header["accession"])
    for study_uid, paths in files.items():
        discovery.studies.append(
            StudyTask(
                study_uid=study_uid,
                accession=accessions.get(study_uid) or None,
                locator={"kind": "files", "files": sorted(paths)},
            )
        )
    discovery.studies.sort(key=lambda task: task.locator["files"][0])
    return discovery


def discover_dicomweb(url: str, filters: dict[str, str] | None = None) -> Discovery:
    """List studies with QIDO-RS; ``filters`` are QIDO query keys (e.g. ModalitiesInStudy=CT)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url)
    discovery = Discovery()
    offset, page = 0, 500
    while True:
        found = client.search_for_studies(
            search_filters=dict(filters or {}), offset=offset, limit=page
        )
        for item in found:
            study = pydicom.Dataset.from_json(item)
            study_uid = str(study.StudyInstanceUID)
            discovery.studies.append(
                StudyTask(
                    study_uid=study_uid,
                    accession=str(study.get("AccessionNumber", "") or "") or None,
                    locator={"kind": "dicomweb", "url": url, "study_uid": study_uid},
                )
            )
        if len(found) < page:
            break
        offset += page
    return discovery
