"""Which tokens drove a prediction: integrated gradients over word embeddings.

For each chunk, the path runs from a baseline where every report token is
replaced by ``[PAD]`` (``[CLS]``/``[SEP]`` kept) to the real input, in
``steps`` points evaluated as one batch. A token's attribution is the dot
product of its embedding difference and the averaged gradient of the target
logit, so positive values pushed towards the target label. Tokens covered by
several overlapping chunks get the mean of their chunk attributions, giving
exactly one value per token of the prepared report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medplug_text.chunking import Chunk


def integrated_gradients(
    model: PreTrainedModel, chunk: Chunk, target: int, pad_id: int, steps: int = 16
) -> np.ndarray:
    """Attribution of each content token of ``chunk`` (without [CLS]/[SEP])."""
    ids = torch.tensor([chunk.input_ids])
    embedding_layer = model.get_input_embeddings()
    with torch.no_grad():
        inputs = embedding_layer(ids)[0]
        baseline_ids = ids.clone()
        baseline_ids[0, 1:-1] = pad_id
        baseline = embedding_layer(baseline_ids)[0]
    alphas = (torch.arange(1, steps + 1, dtype=inputs.dtype) / steps).view(-1, 1, 1)
    path = (baseline + alphas * (inputs - baseline)).detach().requires_grad_(True)
    mask = torch.ones(path.shape[:2], dtype=torch.long)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        logits = model(inputs_embeds=path, attention_mask=mask).logits
        logits[:, target].sum().backward()
    model.train(was_training)
    average_grad = path.grad.mean(0)
    scores = ((inputs - baseline) * average_grad).sum(-1)
    return scores[1:-1].detach().numpy().astype(np.float64)


def token_attributions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    token_ids: Sequence[int],
    chunks: Sequence[Chunk],
    target: int,
    steps: int = 16,
) -> list[tuple[str, float]]:
    """``(token, attribution)`` for every token of one report, in order."""
    totals = np.zeros(len(token_ids), dtype=np.float64)
    counts = np.zeros(len(token_ids), dtype=np.float64)
    for chunk in chunks:
        scores = integrated_gradients(model, chunk, target, tokenizer.pad_token_id, steps)
        totals[chunk.start : chunk.start + len(scores)] += scores
        counts[chunk.start : chunk.start + len(scores)] += 1
    values = totals / np.maximum(counts, 1)
    tokens = tokenizer.convert_ids_to_tokens(list(token_ids))
    return [(str(token), float(value)) for token, value in zip(tokens, values, strict=True)]
