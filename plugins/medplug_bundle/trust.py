"""Sites that require signed model folders get no bundle code they cannot verify."""

from __future__ import annotations

import os
from pathlib import Path

from medplug.errors import ModelFileError
from medplug.model_signing import TRUSTED_KEYS_ENV


def refuse_if_signatures_required(folder: Path, why: str) -> None:
    """Raise ``ModelFileError`` when ``MEDPLUG_TRUSTED_KEYS`` is set.

    A medplug signature covers a medplug model folder's files; a bundle's config
    (which runs code) or a TorchScript program carries none, so such a site must
    not load them at all rather than load them unchecked.
    """
    if os.environ.get(TRUSTED_KEYS_ENV, "").strip():
        raise ModelFileError(
            f"{folder}: this site only loads signed model folders ({TRUSTED_KEYS_ENV}); {why}"
        )
