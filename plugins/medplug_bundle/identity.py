"""What a model folder that has no ``medplug.json`` is: the hashes of its files.

medplug's own model folders are identified by the SHA-256 of ``medplug.json``,
which lists the weights' hashes. A bundle or checkpoint folder brought as it is
has no such file, so its identity is the SHA-256 of a manifest: one line
``<relative path> <sha256>`` per file, sorted. Two folders with the same
identity hold byte-identical configs and weights, so they compute the same
outputs; change any file (a weight, a transform in ``inference.json``) and the
identity changes. Hidden files and ``docs/`` are left out: they do not change
what the model computes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medplug.model_folder import sha256_file

SKIPPED_FOLDERS = ("docs",)


def folder_files(folder: Path) -> list[Path]:
    """Files that make up the model, relative to ``folder``, sorted."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if relative.parts[0] in SKIPPED_FOLDERS or "__pycache__" in relative.parts:
            continue
        files.append(relative)
    return files


def folder_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file that makes up the model."""
    return {path.as_posix(): sha256_file(folder / path) for path in folder_files(folder)}


def folder_identity(folder: Path) -> tuple[str, dict[str, str]]:
    """The folder's identity (sha256 of its sorted manifest) and the manifest itself."""
    manifest = folder_manifest(folder)
    text = "".join(f"{name} {digest}\n" for name, digest in sorted(manifest.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), manifest
