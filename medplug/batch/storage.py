"""Telling a full or unwritable output disk apart from a bad study.

A study whose file cannot be decoded is that study's error; a disk that is
full, or an output folder the run may not write, fails every study after it.
Recording those as study errors would mark the rest of the batch failed (and
a rerun would skip them), so the batch stops instead, with one line saying
what is wrong. Nothing committed is lost: the journal's last transaction
either committed or rolled back, and a rerun after freeing space resumes.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from medplug.error_categories import DISK_FULL, NOT_WRITABLE
from medplug.errors import MedplugError

STORAGE_REASONS = (DISK_FULL, NOT_WRITABLE)

_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_DENIED_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_SQLITE_MESSAGES = {
    "database or disk is full": (DISK_FULL, "the journal's disk is full"),
    "attempt to write a readonly database": (NOT_WRITABLE, "the journal is read-only"),
    "unable to open database file": (NOT_WRITABLE, "the journal cannot be opened"),
    "readonly database": (NOT_WRITABLE, "the journal is read-only"),
}


class OutputStorageError(MedplugError):
    """The output folder, journal or spool cannot be written: the whole run stops."""


def storage_problem(exc: BaseException, writing: bool = True) -> tuple[str, str] | None:
    """``(reason, description)`` if ``exc`` (or what caused it) is a full or unwritable disk.

    ``writing=False`` (reading a study's input files): only a full disk counts;
    a permission error there is that one study's problem.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno in _FULL_ERRNOS:
                return DISK_FULL, _describe(current, _FULL_ERRNOS[current.errno])
            if writing and current.errno in _DENIED_ERRNOS:
                return NOT_WRITABLE, _describe(current, _DENIED_ERRNOS[current.errno])
        if isinstance(current, sqlite3.OperationalError):
            message = str(current).lower()
            for text, (reason, description) in _SQLITE_MESSAGES.items():
                if text in message and (writing or reason == DISK_FULL):
                    return reason, description
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: OSError, what: str) -> str:
    """The problem and the file it hit (output names are hashes, never patient data)."""
    return f"{what} ({exc.filename})" if exc.filename else what


def stop_error(out_dir: Path, reason: str, description: str) -> OutputStorageError:
    """The one line a stopped run prints."""
    fix = "free some space" if reason == DISK_FULL else "fix the folder's permissions"
    return OutputStorageError(
        f"cannot write to {out_dir}: {description}; the run stopped (finished studies are "
        f"kept): {fix} and rerun the same command to resume"
    )
