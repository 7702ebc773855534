"""Load a local Hugging Face checkpoint folder, offline and without unpickling by default.

Used both for ``--backbone PATH`` (any BERT-like folder, e.g. a locally
downloaded Bio_ClinicalBERT or RadBERT) and for medplug's own report model
folders. Problems become one clear ``ModelFileError`` that says what a usable
folder must contain, never a stack of hub/HTTP errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from medplug.errors import ModelFileError
from medplug.model_folder import PICKLE_SUFFIXES, is_weight_file

# No model hub on hospital machines: never try one unless the user explicitly set otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors import SafetensorError  # noqa: E402
from transformers import (  # noqa: E402  (after the offline switch on purpose)
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from medplug_text import load_report  # noqa: E402

# Progress bars on every load/save clutter batch logs; medplug reports its own progress.
hf_logging.disable_progress_bar()
load_report.install()  # the "LOAD REPORT" table becomes one plain line

EXPECTED = (
    "a Hugging Face checkpoint folder with config.json, tokenizer files "
    "(tokenizer.json or vocab.txt) and weights in *.safetensors"
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def check_folder(folder: str | Path, allow_pickle: bool = False) -> Path:
    """Fail early, and clearly, on a folder that cannot be a usable checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: checkpoint folder not found; expected {EXPECTED}")
    names = {path.name for path in folder.iterdir()}
    if "config.json" not in names:
        raise ModelFileError(f"{folder}: no config.json; expected {EXPECTED}")
    if not names.intersection(TOKENIZER_FILES):
        raise ModelFileError(f"{folder}: no tokenizer files; expected {EXPECTED}")
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if not has_safetensors:
        if not pickles:
            raise ModelFileError(f"{folder}: no weight files; expected {EXPECTED}")
        if not allow_pickle:
            raise ModelFileError(
                f"{folder}: only pickle weight files {pickles}; medplug does not unpickle "
                "by default. Convert them to safetensors, or pass allow_pickle=True "
                "(`--allow-pickle`) to load them with torch.load(weights_only=True)"
            )
    return folder


def load_config(folder: Path) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{folder}: config.json is not a usable model config ({exc})") from exc


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    folder = Path(folder)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"{folder}: tokenizer cannot be loaded ({exc}); expected {EXPECTED}"
        ) from exc


def load_classifier(
    folder: str | Path,
    labels: list[str] | None = None,
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """``AutoModelForSequenceClassification`` from a local folder.

    With ``labels`` the head is sized for them (a backbone gets a new, randomly
    initialised head, as usual when fine-tuning); without, the folder's own head
    and ``id2label`` are used as they are.
    """
    folder = check_folder(folder, allow_pickle)
    config = load_config(folder)
    kwargs: dict = {}
    if labels is not None:
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: index for index, label in enumerate(labels)},
        }
    return _from_pretrained(
        AutoModelForSequenceClassification, folder, config, allow_pickle, kwargs
    )


def load_masked_lm(folder: str | Path, allow_pickle: bool = False) -> PreTrainedModel:
    """``AutoModelForMaskedLM`` from a local folder, for further domain pretraining."""
    folder = check_folder(folder, allow_pickle)
    return _from_pretrained(AutoModelForMaskedLM, folder, load_config(folder), allow_pickle, {})


def _from_pretrained(auto_class, folder: Path, config, allow_pickle: bool, kwargs: dict):
    has_safetensors = any(path.suffix == ".safetensors" for path in folder.iterdir())
    try:
        return auto_class.from_pretrained(
            folder,
            local_files_only=True,
            use_safetensors=has_safetensors or not allow_pickle,
            weights_only=True,
            ignore_mismatched_sizes=bool(kwargs),
            **kwargs,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        kind = getattr(config, "model_type", "unknown")
        weights = ", ".join(p.name for p in sorted(folder.iterdir()) if is_weight_file(p.name))
        raise ModelFileError(
            f"{folder} ({weights or 'no weight files'}): cannot load a "
            f"{auto_class.__name__.removeprefix('AutoModelFor')} "
            f"model from this {kind!r} checkpoint ({exc}); expected {EXPECTED} whose "
            "architecture transformers supports for sequence classification"
        ) from exc
