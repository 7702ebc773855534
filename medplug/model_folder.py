"""Self-describing model folders, in the spirit of Hugging Face ``save_pretrained``.

A folder holds the weights (safetensors, or an HF checkpoint's own files) and
``medplug.json``: the plugin name, its ``PluginInfo``, everything needed to
preprocess exactly as in training, and the SHA-256 of every weight file.
Loading re-hashes the files and refuses a folder whose files changed, a folder
with a weight file ``medplug.json`` does not hash (deleting the hash list must
not turn checking off), and, where the site trusts signing keys
(``MEDPLUG_TRUSTED_KEYS``, see ``medplug.model_signing``), a folder whose
``medplug.json`` is not signed by one of them. Nothing is ever unpickled.

``MEDPLUG_ALLOW_UNHASHED_MODELS=1`` lets unhashed weight files load, for
development only; every such load logs a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medplug.errors import ModelFileError

CONFIG_NAME = "medplug.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Files that hold weights in any format a plugin or transformers might read.
WEIGHT_SUFFIXES = (
    ".safetensors", *PICKLE_SUFFIXES, ".h5", ".msgpack", ".onnx", ".gguf", ".npz", ".npy",
    ".skops", ".joblib",
)  # fmt: skip
WEIGHT_INDEX_SUFFIX = ".index.json"  # sharded checkpoints: which shard holds which tensor
ALLOW_UNHASHED_ENV = "MEDPLUG_ALLOW_UNHASHED_MODELS"

log = logging.getLogger("medplug.models")


def unhashed_allowed() -> bool:
    """True when the development opt-out ``MEDPLUG_ALLOW_UNHASHED_MODELS=1`` is set."""
    return os.environ.get(ALLOW_UNHASHED_ENV, "").strip() == "1"


def is_weight_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(WEIGHT_SUFFIXES) or lower.endswith(WEIGHT_INDEX_SUFFIX)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_config(folder: Path, config: dict[str, Any], hashed_files: Iterable[str]) -> Path:
    """Write ``medplug.json`` recording the hash of each file in ``hashed_files``."""
    folder = Path(folder)
    config = dict(config)
    config["file_sha256"] = {name: sha256_file(folder / name) for name in sorted(hashed_files)}
    path = folder / CONFIG_NAME
    # Key order is kept as written: plugins may rely on the order of a mapping.
    path.write_text(json.dumps(config, indent=2, default=_json_default) + "\n")
    return path


def read_config(
    folder: Path,
    expected_plugin: str | None = None,
    *,
    check_signed: bool = True,
    allow_unhashed: bool | None = None,
) -> dict[str, Any]:
    """Read ``medplug.json``, check its signature where keys are trusted, verify every
    recorded file hash and refuse weight files it does not hash.

    ``check_signed=False`` and ``allow_unhashed`` are for ``sign_folder`` only: a
    folder is verified, unsigned, before it is signed, and never with the opt-out.
    """
    from medplug.model_signing import check_signature  # cryptography: only when loading

    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelFileError(f"{folder}: not a medplug model folder (no {CONFIG_NAME})")
    raw = path.read_bytes()
    if check_signed:
        check_signature(folder, raw)
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: not a JSON object")
    if expected_plugin and config.get("plugin") != expected_plugin:
        raise ModelFileError(
            f"{folder}: model was written by plugin {config.get('plugin')!r}, "
            f"not {expected_plugin!r}"
        )
    hashes = config.get("file_sha256", {})
    if not isinstance(hashes, dict):
        raise ModelFileError(f"{path}: file_sha256 must map file names to SHA-256 hex digests")
    for name, expected in hashes.items():
        file_path = _listed_file(folder, name)
        if not file_path.is_file():
            raise ModelFileError(f"{folder}: {name} is listed in {CONFIG_NAME} but missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ModelFileError(
                f"{file_path}: SHA-256 {actual[:12]}… does not match {str(expected)[:12]}… "
                f"recorded in {CONFIG_NAME}; the file was modified or corrupted, refusing to load"
            )
    check_all_weights_hashed(folder, hashes, allow_unhashed)
    # Nested model folders (fusion's sources/<modality>/) may be loaded lazily, mid-batch:
    # verify them now too, so a tampered source refuses the whole folder at load.
    for name in hashes:
        if PurePosixPath(name).name == CONFIG_NAME and PurePosixPath(name).parent.parts:
            read_config(
                folder / PurePosixPath(name).parent,
                check_signed=check_signed,
                allow_unhashed=allow_unhashed,
            )
    return config


def check_all_weights_hashed(
    folder: Path, hashes: dict[str, str], allow_unhashed: bool | None = None
) -> None:
    """Refuse a weight file ``medplug.json`` does not hash (unless the opt-out is set).

    A weight file in a sub-folder that is itself a model folder (fusion's
    ``sources/<modality>/``) is covered when that sub-folder's ``medplug.json``
    is hashed: its own hashes are checked when it is loaded.
    """
    unhashed = [name for name in weight_files(folder) if not _covered(name, hashes)]
    if not unhashed:
        return
    if unhashed_allowed() if allow_unhashed is None else allow_unhashed:
        log.warning(
            "%s: loading weight files not hashed in %s (%s) because %s=1; "
            "for development only",
            folder, CONFIG_NAME, ", ".join(unhashed), ALLOW_UNHASHED_ENV,
        )  # fmt: skip
        return
    raise ModelFileError(
        f"{folder / unhashed[0]}: weight file has no SHA-256 in {CONFIG_NAME}; refusing to load "
        f"an unverified model (re-save the folder with medplug, or set "
        f"{ALLOW_UNHASHED_ENV}=1 for development)"
    )


def check_top_level_files_hashed(folder: Path, hashes: dict[str, str]) -> None:
    """For folders a library reads whole (HF ``from_pretrained`` reads any tokenizer or
    config file it finds): refuse any top-level file ``medplug.json`` does not hash."""
    extra = sorted(
        path.name
        for path in Path(folder).iterdir()
        if path.is_file()
        and path.name not in hashes
        and path.name not in (CONFIG_NAME, CONFIG_NAME + ".sig")
    )
    if not extra:
        return
    if unhashed_allowed():
        log.warning(
            "%s: loading with files not hashed in %s (%s) because %s=1; for development only",
            folder, CONFIG_NAME, ", ".join(extra), ALLOW_UNHASHED_ENV,
        )  # fmt: skip
        return
    raise ModelFileError(
        f"{Path(folder) / extra[0]}: file has no SHA-256 in {CONFIG_NAME} and the model "
        f"loader would read it; refusing to load (set {ALLOW_UNHASHED_ENV}=1 for development)"
    )


def check_unverified_folder(folder: Path, what: str) -> None:
    """Gate for a folder with no ``medplug.json`` at all (a plain HF checkpoint).

    Nothing in it can be verified, so it loads only with the development opt-out
    and never where the site trusts signing keys.
    """
    from medplug.model_signing import trusted_keys_configured

    if trusted_keys_configured():
        raise ModelFileError(
            f"{folder}: {what} has no signed {CONFIG_NAME}; this site only loads model "
            "folders signed by a trusted key (MEDPLUG_TRUSTED_KEYS)"
        )
    if not unhashed_allowed():
        raise ModelFileError(
            f"{folder}: {what} has no {CONFIG_NAME}, so its weights cannot be verified; "
            f"refusing to load (set {ALLOW_UNHASHED_ENV}=1 for development)"
        )
    log.warning(
        "%s: loading %s without %s (unverified) because %s=1; for development only",
        folder, what, CONFIG_NAME, ALLOW_UNHASHED_ENV,
    )  # fmt: skip


def weight_files(folder: Path) -> list[str]:
    """Every weight file under ``folder``, as a POSIX path relative to it."""
    folder = Path(folder)
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if is_weight_file(path.name) and (path.is_file() or path.is_symlink())
    )


def _covered(name: str, hashes: dict[str, str]) -> bool:
    if name in hashes:
        return True
    parents = PurePosixPath(name).parents
    return any(
        f"{parent.as_posix()}/{CONFIG_NAME}" in hashes for parent in parents if str(parent) != "."
    )


def _listed_file(folder: Path, name: object) -> Path:
    """The file a ``file_sha256`` key names; it must stay inside the folder."""
    if not isinstance(name, str) or not name:
        raise ModelFileError(f"{folder}: {CONFIG_NAME} lists a file with an invalid name")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise ModelFileError(f"{folder}: {CONFIG_NAME} lists {name!r}, outside the folder")
    return folder / name


def save_weights(folder: Path, state_dict: dict[str, torch.Tensor]) -> str:
    """Save tensors as safetensors; returns the file name to hash."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME))
    return WEIGHTS_NAME


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Load safetensors weights; pickle files are refused, never opened."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found pickle files {pickled}, which medplug does not load)" if pickled else ""
        raise ModelFileError(f"{folder}: no {WEIGHTS_NAME}{hint}")
    return load_safetensors(path)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with any failure as a ``ModelFileError`` naming the file."""
    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, ... from a junk or truncated file
        raise ModelFileError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from exc


def save_model_folder(
    folder: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Weights plus ``medplug.json`` in one call, for plugins with one network."""
    folder = Path(folder)
    weights = save_weights(folder, state_dict)
    write_config(folder, config, [weights])
    return folder


def load_model_folder(
    folder: str | Path, expected_plugin: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and load what ``save_model_folder`` wrote."""
    folder = Path(folder)
    config = read_config(folder, expected_plugin)
    return load_weights(folder), config


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in {CONFIG_NAME}")
