"""File names built from received data: checked, never trusted.

A DICOM sender chooses its UIDs, an HTTP client its file names, a zip its entry
names. Any of them can hold ``../`` or an absolute path, so a name taken from
received data is either checked against a strict grammar (DICOM UIDs) or
replaced by a generated one, and the final path is checked to stay inside its
folder after resolving links.
"""

from __future__ import annotations

import re
from pathlib import Path

from medplug.errors import MedplugError

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64


class UnsafePathError(MedplugError):
    """A name from received data would lead outside the folder it belongs in."""


def is_dicom_uid(value: object) -> bool:
    """True for a UID in the DICOM grammar (PS3.5 9.1): digits and dots, at most 64 chars."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_UID_LENGTH
        and UID_PATTERN.fullmatch(value) is not None
    )


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it resolves to a direct or deeper child of ``folder``.

    ``name`` should already be a generated or grammar-checked name; this is the
    second line of defence (symbolic links, a grammar someone loosens later).
    """
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if target == root or root not in target.parents:
        raise UnsafePathError(f"file name {name!r} would leave its folder; refused")
    return Path(folder) / name  # as given (relative stays relative), now known to be safe
