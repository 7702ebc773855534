"""Masked-language-model domain pretraining on report text (no labels needed)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from medplug.progress import report
from medplug_text.chunking import Chunk
from medplug_text.inference import length_grouped_batches

log = logging.getLogger(__name__)


def pretrain_mlm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chunks: Sequence[Chunk],
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
    mlm_probability: float = 0.15,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` (an ``*ForMaskedLM``) in place; returns the mean loss per epoch."""
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=mlm_probability, return_tensors="pt", seed=seed
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    steps = epochs * ((len(chunks) + batch_size - 1) // batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), max(steps, 1))
    rng = random.Random(seed)
    lengths = [len(chunk.input_ids) for chunk in chunks]
    losses = []
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for index in length_grouped_batches(lengths, batch_size, rng):
            examples = [{"input_ids": list(chunks[i].input_ids)} for i in index]
            batch = collator(examples)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += loss.item() * len(examples)
        losses.append(total / max(len(chunks), 1))
        log.info("MLM epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
        report("MLM pretraining", epoch + 1, epochs, loss=losses[-1])
    return losses
