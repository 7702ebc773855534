"""From labelled reports to a saved report model folder.

Steps: prepare text (scrub, normalise, sections) -> tokenizer (trained
WordPiece, or the backbone's own) -> network (compact BERT, or the backbone)
-> optional MLM domain pretraining on all report text -> fine-tuning with the
best validation epoch kept -> temperature fitted on validation -> save.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from medplug.calibration import fit_temperature, softmax_with_temperature
from medplug.errors import DataError, ModelFileError
from medplug.evaluation import binary_metrics
from medplug_text.checkpoint import check_folder, load_classifier, load_masked_lm, load_tokenizer
from medplug_text.config import TrainConfig
from medplug_text.inference import chunk_reports
from medplug_text.info import plugin_info
from medplug_text.loop import fine_tune
from medplug_text.model_io import save_report_model
from medplug_text.modeling import compact_config, new_classifier, new_masked_lm
from medplug_text.pretrain import pretrain_mlm
from medplug_text.reports import prepare_report
from medplug_text.tokenization import train_wordpiece

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    folder: Path
    temperature: float
    val_metrics: dict[str, Any]
    seconds: dict[str, float]  # tokenizer, mlm, fine_tune, total
    mlm_losses: list[float]
    best_epoch: int


def train_report_model(
    out_dir: str | Path,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    labels: list[str],
    config: TrainConfig,
    backbone: str | Path | None = None,
    mlm_texts: Sequence[str] = (),
    allow_pickle: bool = False,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train, calibrate and save; ``labels[i]`` names class index ``i``.

    ``mlm_texts`` is unlabelled report text used, with the training and
    validation texts, for the tokenizer and MLM pretraining.
    """
    _check_labels(train_labels, val_labels, labels)
    set_seed(config.seed)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    prepare = [prepare_report(text, config.sections) for text in (*train_texts, *val_texts)]
    train_prepared, val_prepared = prepare[: len(train_texts)], prepare[len(train_texts) :]
    all_text = prepare + [prepare_report(text, config.sections) for text in mlm_texts]

    tokenizer, classifier, masked_lm = _build(backbone, labels, config, all_text, allow_pickle)
    seconds["tokenizer_and_model"] = time.perf_counter() - started
    mlm_losses: list[float] = []
    if config.mlm_epochs > 0:
        mark = time.perf_counter()
        assert masked_lm is not None
        chunks = chunk_reports(tokenizer, all_text, config.window)
        mlm_losses = pretrain_mlm(
            masked_lm, tokenizer, chunks, config.mlm_epochs, config.mlm_learning_rate,
            config.batch_size, config.mlm_probability, config.seed,
        )  # fmt: skip
        _copy_encoder(masked_lm, classifier)
        seconds["mlm"] = time.perf_counter() - mark

    mark = time.perf_counter()
    history = fine_tune(
        classifier, tokenizer, train_prepared, train_labels, val_prepared, val_labels, config
    )
    seconds["fine_tune"] = time.perf_counter() - mark
    assert history.val_logits is not None
    temperature = fit_temperature(history.val_logits, np.asarray(val_labels))
    val_metrics = _val_metrics(history.val_logits, np.asarray(val_labels), temperature, labels)
    seconds["total"] = time.perf_counter() - started

    medplug_config = {
        "info": plugin_info(labels, {"validation": val_metrics}).to_dict(),
        "labels": labels,
        "temperature": temperature,
        "window": {
            "max_length": config.window.max_length,
            "stride": config.window.stride,
            "pooling": config.window.pooling,
        },
        "sections": list(config.sections) if config.sections else None,
        "backbone": str(backbone) if backbone else "compact-bert (trained here)",
        "training": {
            "config": config.to_dict(),
            "n_train": len(train_texts),
            "n_val": len(val_texts),
            "n_mlm_texts": len(all_text) if config.mlm_epochs else 0,
            "best_epoch": history.best_epoch,
            "val_loss": history.val_loss,
            "mlm_losses": mlm_losses,
            "seconds": seconds,
            "torch_threads": torch.get_num_threads(),
        },
        **(extra_config or {}),
    }
    folder = save_report_model(out_dir, classifier, tokenizer, medplug_config)
    log.info("saved report model to %s (temperature %.3f)", folder, temperature)
    return TrainResult(folder, temperature, val_metrics, seconds, mlm_losses, history.best_epoch)


def _build(
    backbone: str | Path | None,
    labels: list[str],
    config: TrainConfig,
    texts: list[str],
    allow_pickle: bool,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, PreTrainedModel | None]:
    """Tokenizer, classifier, and (when MLM is asked for) a masked LM sharing its shape."""
    wants_mlm = config.mlm_epochs > 0
    if backbone is not None:
        folder = check_folder(backbone, allow_pickle)
        tokenizer = load_tokenizer(folder)
        classifier = load_classifier(folder, labels, allow_pickle)
        positions = getattr(classifier.config, "max_position_embeddings", None)
        if positions is not None and config.window.max_length > positions:
            raise ModelFileError(
                f"{folder}: model takes at most {positions} positions, "
                f"max_length {config.window.max_length} is too long"
            )
        if tokenizer.pad_token_id is None or tokenizer.cls_token_id is None:
            raise ModelFileError(
                f"{folder}: tokenizer has no [PAD]/[CLS]/[SEP] tokens; expected a BERT-like "
                "encoder checkpoint"
            )
        masked_lm = load_masked_lm(folder, allow_pickle) if wants_mlm else None
        return tokenizer, classifier, masked_lm
    tokenizer = train_wordpiece(texts, vocab_size=config.vocab_size)
    bert_config = compact_config(len(tokenizer), tokenizer.pad_token_id, config.size)
    return (
        tokenizer,
        new_classifier(bert_config, labels),
        new_masked_lm(bert_config) if wants_mlm else None,
    )


def _copy_encoder(source: PreTrainedModel, target: PreTrainedModel) -> None:
    """Carry the domain-pretrained encoder into the classifier (its head stays new)."""
    result = target.base_model.load_state_dict(source.base_model.state_dict(), strict=False)
    unexpected = [key for key in result.unexpected_keys if "pooler" not in key]
    missing = [key for key in result.missing_keys if "pooler" not in key]
    if unexpected or missing:
        raise ModelFileError(
            f"MLM encoder does not match the classifier (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )


def _check_labels(
    train_labels: Sequence[int], val_labels: Sequence[int], labels: list[str]
) -> None:
    if len(labels) < 2:
        raise DataError(f"need at least two labels, got {labels}")
    present = set(train_labels) | set(val_labels)
    if not present <= set(range(len(labels))):
        raise DataError(f"label indices {sorted(present)} do not fit labels {labels}")
    if len(set(train_labels)) < 2:
        raise DataError("the training reports hold only one label")


def _val_metrics(
    logits: np.ndarray, labels: np.ndarray, temperature: float, names: list[str]
) -> dict[str, Any]:
    probs = softmax_with_temperature(logits, temperature)
    if len(names) == 2 and len(set(labels.tolist())) == 2:
        return binary_metrics(labels, probs[:, 1], n_boot=200)
    return {"n": int(len(labels)), "accuracy": float((probs.argmax(1) == labels).mean())}
