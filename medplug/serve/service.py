"""Load plugins once and run predictions on a bounded pool of worker threads.

Reading the study (``medplug.ingest``) and the model call both run in the pool,
so the event loop only moves bytes and a slow study never blocks ``/health``.
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from medplug.contract import Case, Plugin, Prediction
from medplug.errors import PluginError, PluginNotFoundError
from medplug.registry import load_plugin
from medplug.serve.guard import Ticket
from medplug.serve.settings import ServeSettings

T = TypeVar("T")
PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class PredictionService:
    """Plugins cached by name and a fixed number of worker threads."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="medplug-predict")
        self._plugins: dict[tuple[str, bool], Plugin] = {}
        self._lock = threading.Lock()

    def model_dir(self, name: str) -> Path | None:
        """``<models>/<name>``; ``name`` comes from the URL, so it must be a plain name."""
        if not PLUGIN_NAME.fullmatch(name):
            raise PluginNotFoundError(f"no plugin named {name[:64]!r}")
        return self.settings.models_dir / name if self.settings.models_dir else None

    def plugin(self, name: str, explain: bool = True) -> Plugin:
        """The loaded plugin ``name``; loaded once, then shared by all requests.

        ``explain=False`` gets a shallow copy that skips explanations (same model
        object, no second load), so requests never change each other's setting.
        """
        with self._lock:
            if (name, True) not in self._plugins:
                self._plugins[(name, True)] = load_plugin(name, self.model_dir(name))
            if explain:
                return self._plugins[(name, True)]
            if (name, False) not in self._plugins:
                quiet = copy.copy(self._plugins[(name, True)])
                if hasattr(quiet, "explain"):
                    quiet.explain = False  # type: ignore[attr-defined]
                self._plugins[(name, False)] = quiet
            return self._plugins[(name, False)]

    def predict_path(
        self,
        name: str,
        path: Path,
        report: str | None,
        clinical: dict[str, Any],
        explain: bool = True,
    ) -> tuple[Case, Prediction]:
        """Read the study at ``path`` and predict it (runs in a worker thread)."""
        from medplug.ingest import load_case

        plugin = self.plugin(name, explain)
        case_id = f"upload-{uuid.uuid4().hex[:8]}"
        case = load_case(path, case_id=case_id, report=report, clinical=clinical or None)
        prediction = plugin.predict(case)
        if prediction.failed:  # a plugin may hand back a failed Prediction instead of raising
            raise PluginError(prediction.error["message"] if prediction.error else "failed")
        return case, prediction

    async def run(self, ticket: Ticket | None, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in the pool; the admission ticket is released when it finishes."""

        def job() -> T:
            try:
                return function(*args)
            finally:
                if ticket is not None:
                    ticket.release()

        if ticket is not None:
            ticket.held_by_job = True
        future = self.executor.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancelled() and ticket is not None:  # timed out while still queued
                ticket.release()
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
