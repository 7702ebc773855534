"""Checking and loading a local ``AutoModelForImageClassification`` folder safely.

The folder must hold ``config.json``, the image processor's
``preprocessor_config.json`` and safetensors weights. Pickle weight files
(``pytorch_model.bin``) are refused rather than unpickled, and so is a config
that asks for remote code (``auto_map``): nothing outside transformers runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medplug.errors import ModelFileError
from medplug.model_folder import PICKLE_SUFFIXES
from medplug_bundle.json_file import read_json_object

CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"


def check_folder(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, after checking the folder is safe and complete."""
    config_path = folder / CONFIG
    config = read_json_object(config_path, "not a Hugging Face checkpoint folder")
    if "auto_map" in config:
        raise ModelFileError(
            f"{config_path}: auto_map asks for the checkpoint's own Python code "
            "(trust_remote_code); medplug runs only architectures transformers ships"
        )
    if not (folder / PROCESSOR).is_file():
        raise ModelFileError(
            f"{folder / PROCESSOR}: missing; save the image processor with the model "
            "(processor.save_pretrained(folder))"
        )
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise ModelFileError(
            f"{folder}: no safetensors weights"
            + (f" (only pickle files {pickles}, which medplug never unpickles)" if pickles else "")
            + "; save with model.save_pretrained(folder) (safetensors is the default)"
        )
    if not isinstance(config.get("id2label"), dict) or not config["id2label"]:
        raise ModelFileError(f"{config_path}: id2label is missing; the classes need names")
    return config


def load_checkpoint(folder: Path) -> tuple[Any, Any]:
    """The model (eval mode, eager attention so attentions can be returned) and processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(
            folder,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation="eager",
        )
        processor = AutoImageProcessor.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{folder}: transformers could not load it ({first[:200]})") from None
    return model.eval(), processor
