"""A rich progress bar for ``medplug train``: epoch, loss and validation AUC as they come."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from medplug.progress import ProgressEvent, reporting

NOTE_LOGGERS = ("medplug_text", "medplug_fusion")
_NAMES = {"loss": "loss", "val_loss": "val loss", "val_auc": "val AUC"}


def describe(event: ProgressEvent) -> str:
    figures = ", ".join(
        f"{_NAMES.get(key, key)} {value:.4f}" for key, value in event.figures.items()
    )
    total = f"/{event.total}" if event.total else ""
    return f"{event.stage} epoch {event.step}{total}" + (f": {figures}" if figures else "")


@contextmanager
def training_progress(console: Console, first: str = "preparing") -> Iterator[Progress]:
    """Show a bar per stage and log one line per epoch while the block trains."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def receive(event: ProgressEvent) -> None:
        if event.stage not in tasks:
            tasks[event.stage] = progress.add_task(event.stage, total=event.total)
        text = describe(event)
        progress.update(tasks[event.stage], completed=event.step, description=text)
        progress.console.log(text)

    class _Notes(logging.Handler):
        """Plugins' own one-line notes (e.g. the model load summary), not their debug log."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.name in NOTE_LOGGERS and record.levelno >= logging.INFO:
                progress.console.log(record.getMessage())

    handler = _Notes()
    loggers = [logging.getLogger(name) for name in NOTE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with progress, reporting(receive):
            progress.console.log(first)
            yield progress
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
