"""Fine-tune a sequence classifier on labelled report chunks, keeping the best epoch."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from medplug.progress import report
from medplug_text.chunking import Chunk
from medplug_text.config import TrainConfig
from medplug_text.inference import (
    chunk_reports,
    forward_chunks,
    length_grouped_batches,
    pad_batch,
    pool,
)

log = logging.getLogger(__name__)


@dataclass
class FitHistory:
    """Per-epoch validation loss, and which epoch's weights were kept."""

    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    val_logits: np.ndarray | None = None  # pooled, uncalibrated, of the kept weights


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    return float(torch.nn.functional.cross_entropy(logits_t, torch.as_tensor(labels)))


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    config: TrainConfig,
) -> FitHistory:
    """Train ``model`` in place; every chunk of a training report carries its label.

    After each epoch the pooled validation loss is measured, and the weights of
    the best epoch are restored at the end.
    """
    if config.train_top_layers is not None:
        freeze_lower_layers(model, config.train_top_layers)
    chunks = chunk_reports(tokenizer, train_texts, config.window)
    chunk_labels = [int(train_labels[chunk.report]) for chunk in chunks]
    val_chunks = chunk_reports(tokenizer, val_texts, config.window)
    val_y = np.asarray(val_labels, dtype=int)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    steps = config.epochs * ((len(chunks) + config.batch_size - 1) // config.batch_size)
    schedule = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_fraction * steps), max(steps, 1)
    )
    rng = random.Random(config.seed)
    history = FitHistory()
    best_state, best_loss = None, float("inf")
    for epoch in range(config.epochs):
        train_loss = _train_epoch(
            model, tokenizer, chunks, chunk_labels, optimizer, schedule, config, rng
        )
        logits = _pooled_logits(model, tokenizer, val_chunks, len(val_texts), config)
        loss = cross_entropy(logits, val_y)
        history.val_loss.append(loss)
        log.info("epoch %d/%d: validation loss %.4f", epoch + 1, config.epochs, loss)
        report(
            "fine-tune", epoch + 1, config.epochs,
            loss=train_loss, val_loss=loss, val_auc=binary_auc(val_y, logits),
        )  # fmt: skip
        if loss < best_loss:
            best_loss, history.best_epoch, history.val_logits = loss, epoch + 1, logits
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def freeze_lower_layers(model: PreTrainedModel, train_top_layers: int) -> None:
    """Train only the top ``train_top_layers`` encoder layers and the head.

    Cuts the backward pass of a large pretrained backbone on CPU; a model
    without a BERT-like ``encoder.layer`` list is trained whole.
    """
    base = model.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None or train_top_layers >= len(layers):
        return
    frozen = [getattr(base, "embeddings", None), *list(layers)[: len(layers) - train_top_layers]]
    for module in frozen:
        if module is not None:
            module.requires_grad_(False)
    log.info("fine-tuning the top %d of %d encoder layers", train_top_layers, len(layers))


def binary_auc(labels: np.ndarray, logits: np.ndarray) -> float | None:
    """Validation AUC for progress display (two classes, both present), else None."""
    if logits.shape[1] != 2 or len(np.unique(labels)) != 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))


def _train_epoch(model, tokenizer, chunks, labels, optimizer, schedule, config, rng) -> float:
    """One pass over the training chunks; returns the mean training loss."""
    model.train()
    losses = []
    lengths = [len(chunk.input_ids) for chunk in chunks]
    for index in length_grouped_batches(lengths, config.batch_size, rng):
        batch = pad_batch([chunks[i] for i in index], tokenizer.pad_token_id)
        batch["labels"] = torch.tensor([labels[i] for i in index])
        loss = model(**batch).loss
        losses.append(float(loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    return float(np.mean(losses)) if losses else float("nan")


def _pooled_logits(
    model, tokenizer, chunks: Sequence[Chunk], n_reports: int, config: TrainConfig
) -> np.ndarray:
    logits, _ = forward_chunks(model, chunks, tokenizer.pad_token_id, batch_size=64)
    return pool(logits, chunks, n_reports, config.window.pooling)
