"""Batched forward passes over report chunks with dynamic padding."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medplug_text.chunking import Chunk, make_chunks, pool


@dataclass(frozen=True)
class WindowSettings:
    """How reports are cut for the model; stored in ``medplug.json`` with the model."""

    max_length: int = 128
    stride: int = 64
    pooling: str = "mean"


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each (already prepared) text, without special tokens or truncation."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)[
        "input_ids"
    ]


def chunk_reports(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], window: WindowSettings
) -> list[Chunk]:
    return make_chunks(
        encode(tokenizer, texts),
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        window.max_length,
        window.stride,
    )


def pad_batch(chunks: Sequence[Chunk], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest chunk in this batch only (dynamic padding)."""
    longest = max(len(chunk.input_ids) for chunk in chunks)
    ids = torch.full((len(chunks), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunks), longest), dtype=torch.long)
    for row, chunk in enumerate(chunks):
        ids[row, : len(chunk.input_ids)] = torch.tensor(chunk.input_ids)
        mask[row, : len(chunk.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar length (like HF ``group_by_length``): less padding.

    Indices are shuffled, cut into groups of ``group`` batches, sorted by length
    inside each group, batched, and the batches shuffled again.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for begin in range(0, len(order), span):
        part = sorted(order[begin : begin + span], key=lambda index: lengths[index])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def forward_chunks(
    model: PreTrainedModel, chunks: Sequence[Chunk], pad_id: int, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and mean-pooled last hidden states of every chunk, in input order.

    Chunks are sorted by length before batching so padding stays small.
    """
    order = sorted(range(len(chunks)), key=lambda index: len(chunks[index].input_ids))
    logits = np.zeros((len(chunks), model.config.num_labels), dtype=np.float32)
    embeddings = np.zeros((len(chunks), model.config.hidden_size), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            batch_index = order[begin : begin + batch_size]
            batch = pad_batch([chunks[i] for i in batch_index], pad_id)
            output = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            hidden = output.hidden_states[-1]
            mean = (hidden * mask).sum(1) / mask.sum(1)
            logits[batch_index] = output.logits.float().numpy()
            embeddings[batch_index] = mean.float().numpy()
    model.train(was_training)
    return logits, embeddings


def predict_reports(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    window: WindowSettings,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled logits ``(n, labels)`` and embeddings ``(n, hidden)`` of prepared texts."""
    chunks = chunk_reports(tokenizer, texts, window)
    logits, embeddings = forward_chunks(model, chunks, tokenizer.pad_token_id, batch_size)
    return (
        pool(logits, chunks, len(texts), window.pooling),
        pool(embeddings, chunks, len(texts), "mean"),
    )
