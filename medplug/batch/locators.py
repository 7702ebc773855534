"""Where a study lives: typed locators instead of dicts keyed by ``kind``.

A locator is what a worker needs to find a study's instances without any
shared state: its files (a folder source, found by the header scan), a folder
(what ``medplug listen`` spooled), or a DICOMweb server and Study Instance
UID (fetched by WADO-RS on the worker). The journal stores each as JSON
(``to_json``; the same JSON as before these types, so old output folders
resume), and ``locator_from_json`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from medplug.errors import DataError


@dataclass(frozen=True)
class FilesLocator:
    """The study's instance files, wherever they lie (folder source)."""

    files: tuple[str, ...]
    kind: ClassVar[str] = "files"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": list(self.files)}


@dataclass(frozen=True)
class FolderLocator:
    """Every file under a folder is the study's (the listener's spool folder)."""

    path: str
    kind: ClassVar[str] = "folder"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class DicomwebLocator:
    """A study on a DICOMweb server, retrieved whole by WADO-RS."""

    url: str
    study_uid: str
    kind: ClassVar[str] = "dicomweb"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "study_uid": self.study_uid}


StudyLocator = FilesLocator | FolderLocator | DicomwebLocator


def locator_from_json(data: dict[str, Any]) -> StudyLocator:
    """The typed locator of a journal's JSON (other keys, such as ``accession``, ignored)."""
    kind = data.get("kind")
    try:
        if kind == FilesLocator.kind:
            return FilesLocator(tuple(data["files"]))
        if kind == FolderLocator.kind:
            return FolderLocator(data["path"])
        if kind == DicomwebLocator.kind:
            return DicomwebLocator(data["url"], data["study_uid"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"study locator of kind {kind!r} lacks {exc}") from None
    raise DataError(f"unknown study locator kind {kind!r}")
