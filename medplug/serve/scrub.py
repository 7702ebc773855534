"""Keep the server's own paths out of every answer.

Messages from ingest and model loading name files, which on the server are a
temporary upload folder or the models folder; a client needs neither, and
server paths help an attacker. Upload paths become ``upload/...``, any other
absolute path ``<server path>``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

TEMP_UPLOAD = re.compile(re.escape(tempfile.gettempdir()) + r"/medplug-serve-[^/\s'\"]+/input")
ABSOLUTE_PATH = re.compile(r"(?<![\w/:.~-])/[^\s'\"/:),;]+(?:/[^\s'\"/:),;]*)*")


def scrub_paths(message: str) -> str:
    """``message`` with the upload folder shown as ``upload`` and other paths hidden."""
    return ABSOLUTE_PATH.sub("<server path>", TEMP_UPLOAD.sub("upload", message))


def neutral_sources(value: Any, root: Path, label: str) -> Any:
    """``value`` (JSON-like) with every string naming a path under ``root`` replaced by
    ``label``: a prediction's ``input_source`` must not show the server's temp folder."""
    prefix = str(root)
    if isinstance(value, str):
        return label if prefix in value else value
    if isinstance(value, dict):
        return {key: neutral_sources(item, root, label) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [neutral_sources(item, root, label) for item in value]
    return value


def scrub_upload_paths(value: Any) -> Any:
    """``value`` (JSON-like) with the temporary upload folder shown as ``upload`` in
    every string (warnings and messages a plugin copied from ingest)."""
    if isinstance(value, str):
        return TEMP_UPLOAD.sub("upload", value)
    if isinstance(value, dict):
        return {key: scrub_upload_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_upload_paths(item) for item in value]
    return value
