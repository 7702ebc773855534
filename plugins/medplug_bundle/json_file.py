"""The JSON files the no-code routes read (metadata.json, torchscript.json, config.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medplug.errors import ModelFileError


def read_json_object(path: Path, missing: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a ``ModelFileError`` naming the file and the problem.

    ``missing`` completes the message for an absent file (what folder needs it).
    """
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: must hold a JSON object")
    return data
