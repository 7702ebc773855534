"""The run's private scratch folder: DICOMweb downloads and decoded volumes in transit.

It lives in the system's temporary folder and is removed when the run ends.
A run killed with ``kill -9`` cannot remove it, and it may hold a few hundred
MiB of decoded volumes, so each folder is named after its process and the
next run removes those whose process is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("medplug.batch")
PREFIX = "medplug-spool-"


def run_spool_folder() -> tempfile.TemporaryDirectory[str]:
    """A new spool folder for this process (clears dead runs' folders first)."""
    remove_stale_spools()
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


def remove_stale_spools(root: Path | None = None) -> int:
    """Remove spool folders left by runs whose process no longer exists; returns how many."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = folder.name[len(PREFIX) :].split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and not _process_exists(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d spool folders of runs that were killed", removed)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
