"""The batch's live progress bar, the same for both engines: done, errors, studies/min.

Studies per minute is the figure a PACS administrator sizes a box (or a
cluster) by; errors are shown apart so a run failing every study is seen at
once rather than at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class StudiesPerMinuteColumn(ProgressColumn):
    """Studies finished by this run per minute since it started (resumed ones not counted)."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("per_minute")
        return Text(f"{rate:.1f} studies/min" if rate else "- studies/min", style="cyan")


class ErrorsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        errors = task.fields.get("errors", 0)
        return Text(f"{errors} errors", style="red" if errors else "dim")


class BatchProgress:
    """A rich progress bar on stderr (disabled: every call costs nothing)."""

    def __init__(self, enabled: bool, total: int, done: int, engine: str = "local") -> None:
        self._progress = Progress(
            TextColumn(f"[bold]studies ({engine})"),
            BarColumn(),
            MofNCompleteColumn(),
            ErrorsColumn(),
            StudiesPerMinuteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._errors = self._finished = 0
        self._started = time.monotonic()
        self._task: TaskID = self._progress.add_task("studies", total=total, completed=done)

    def __enter__(self) -> BatchProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(*exc_info)  # type: ignore[arg-type]

    def finished(self, records: Iterable[dict[str, Any]]) -> None:
        """Count newly committed studies' records."""
        records = list(records)
        self._errors += sum(1 for r in records if r.get("status") == "error")
        self._finished += len(records)
        minutes = (time.monotonic() - self._started) / 60
        rate = self._finished / minutes if minutes > 0 else None
        self._progress.update(
            self._task, advance=len(records), errors=self._errors, per_minute=rate
        )
