"""Self-describing model folders, in the spirit of Hugging Face ``save_pretrained``.

A folder holds the weights (safetensors, or an HF checkpoint's own files) and
``medplug.json``: the plugin name, its ``PluginInfo``, everything needed to
preprocess exactly as in training, and the SHA-256 of every weight file.
Loading re-hashes the files and refuses a folder whose files changed, and
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medplug.errors import ModelFileError

CONFIG_NAME = "medplug.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


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


def read_config(folder: Path, expected_plugin: str | None = None) -> dict[str, Any]:
    """Read ``medplug.json`` and verify every recorded file hash."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelFileError(f"{folder}: not a medplug model folder (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: invalid JSON ({exc})") from exc
    if expected_plugin and config.get("plugin") != expected_plugin:
        raise ModelFileError(
            f"{folder}: model was written by plugin {config.get('plugin')!r}, "
            f"not {expected_plugin!r}"
        )
    for name, expected in config.get("file_sha256", {}).items():
        file_path = folder / name
        if not file_path.is_file():
            raise ModelFileError(f"{folder}: {name} is listed in {CONFIG_NAME} but missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ModelFileError(
                f"{file_path}: SHA-256 {actual[:12]}… does not match {expected[:12]}… "
                f"recorded in {CONFIG_NAME}; the file was modified or corrupted, refusing to load"
            )
    return config


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
    return load_file(str(path))


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
