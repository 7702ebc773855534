"""Progress events from long work (training epochs), without threading callbacks through.

Training code calls ``report(stage, step, total, loss=..., val_auc=...)`` once
per epoch; whoever runs it (the ``medplug train`` commands) installs a
receiver with ``reporting(callback)`` for the duration. Without a receiver a
report costs one context-variable lookup, so library users see nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProgressEvent:
    stage: str  # e.g. "fine-tune", "MLM pretraining", "member 2/5"
    step: int  # steps done in this stage (epochs)
    total: int | None  # steps planned (None: unknown)
    figures: dict[str, float] = field(default_factory=dict)  # loss, val_loss, val_auc, ...


Receiver = Callable[[ProgressEvent], None]
_receiver: ContextVar[Receiver | None] = ContextVar("medplug_progress", default=None)


@contextmanager
def reporting(receiver: Receiver) -> Iterator[None]:
    """Send every ``report`` made inside the block to ``receiver``."""
    token = _receiver.set(receiver)
    try:
        yield
    finally:
        _receiver.reset(token)


def report(stage: str, step: int, total: int | None = None, **figures: Any) -> None:
    receiver = _receiver.get()
    if receiver is not None:
        clean = {k: float(v) for k, v in figures.items() if v is not None}
        receiver(ProgressEvent(stage, step, total, clean))
