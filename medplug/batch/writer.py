"""Finishing studies on a thread, so writing never holds up the next inference batch.

Building an SR with highdicom and a Grad-CAM secondary capture, writing them,
pushing them and committing the journal is pure Python and disk work; the
model's forward pass (torch, which releases the GIL) and the decoder
processes run meanwhile. The queue is bounded, so when writing is the slower
side inference waits for it instead of piling up decoded studies in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from medplug.batch.processing import StudyOutcome, StudyProcessor

_STOP = None


class OutputWriter:
    """One background thread running ``StudyProcessor.finish`` on predicted batches.

    Use as a context manager; leaving it waits for every submitted batch. If
    finishing fails (a journal that cannot be written, say) the error is
    raised in the submitting thread at the next ``submit`` or at exit.
    """

    def __init__(
        self,
        processor: StudyProcessor,
        on_finished: Callable[[list[dict[str, Any]]], None] | None = None,
        max_waiting: int = 2,
    ) -> None:
        self._processor = processor
        self._on_finished = on_finished
        self._queue: queue.Queue[Sequence[StudyOutcome] | None] = queue.Queue(max_waiting)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="medplug-writer", daemon=True)

    def __enter__(self) -> OutputWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def submit(self, outcomes: Sequence[StudyOutcome]) -> None:
        """Queue a predicted batch; blocks while ``max_waiting`` batches are queued."""
        if self._error is not None:
            raise self._error
        self._queue.put(outcomes)

    def _run(self) -> None:
        while (outcomes := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # drain without writing: the batch is stopping
            try:
                records = self._processor.finish(outcomes)
                if self._on_finished is not None:
                    self._on_finished(records)
            except BaseException as exc:  # reported to the main thread, which stops
                self._error = exc
