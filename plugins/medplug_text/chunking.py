"""Reports longer than the model's window: overlapping chunks, then pooling.

A report is never silently truncated: its tokens are cut into windows of
``max_length - 2`` tokens (room for ``[CLS]``/``[SEP]``) starting every
``stride`` tokens, every token lands in at least one chunk, and the chunk
outputs are pooled back into one answer per report. Mean pooling weights each
chunk by its number of tokens, so where the cuts fall barely matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POOLING = ("mean",)


@dataclass(frozen=True)
class Chunk:
    """One model window: which report, where in it, and the ids with special tokens."""

    report: int
    start: int
    input_ids: tuple[int, ...]

    @property
    def n_content(self) -> int:
        """Tokens of report text in this chunk (without [CLS]/[SEP])."""
        return len(self.input_ids) - 2


def window_starts(n_tokens: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` tokens every ``stride`` that cover all tokens."""
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window, got stride={stride}, window={window}")
    starts = [0]
    while starts[-1] + window < n_tokens:
        starts.append(starts[-1] + stride)
    return starts


def make_chunks(
    token_ids: Sequence[Sequence[int]], cls_id: int, sep_id: int, max_length: int, stride: int
) -> list[Chunk]:
    """All chunks of all reports, in report order."""
    window = max_length - 2
    chunks = []
    for report, ids in enumerate(token_ids):
        for start in window_starts(len(ids), window, stride):
            body = tuple(ids[start : start + window])
            chunks.append(Chunk(report, start, (cls_id, *body, sep_id)))
    return chunks


def pool(values: np.ndarray, chunks: Sequence[Chunk], n_reports: int, how: str) -> np.ndarray:
    """Combine per-chunk rows of ``values`` into one row per report (token-weighted mean)."""
    if how not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}, got {how!r}")
    pooled = np.zeros((n_reports, values.shape[1]), dtype=np.float64)
    weights = np.zeros(n_reports, dtype=np.float64)
    for row, chunk in zip(values, chunks, strict=True):
        weight = max(chunk.n_content, 1)
        pooled[chunk.report] += weight * row
        weights[chunk.report] += weight
    return (pooled / weights[:, None]).astype(np.float32)
