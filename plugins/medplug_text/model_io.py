"""A report model folder: an ordinary HF ``save_pretrained`` folder plus ``medplug.json``.

``medplug.json`` records the labels, the fitted temperature, how reports are
prepared and cut, and the SHA-256 of every file, so a changed or swapped
weight file is refused on load (``medplug.model_folder.read_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medplug.model_folder import CONFIG_NAME, write_config
from medplug_text import PLUGIN_NAME, __version__


def save_report_model(
    folder: str | Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    medplug_config: dict[str, Any],
) -> Path:
    """Write model and tokenizer with ``save_pretrained`` (safetensors) and hash them all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config = {"plugin": PLUGIN_NAME, "plugin_version": __version__, **medplug_config}
    written = [p.name for p in folder.iterdir() if p.is_file() and p.name != CONFIG_NAME]
    write_config(folder, config, written)
    return folder
