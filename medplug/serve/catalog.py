"""Plugin discovery for the server, kept off the event loop.

Discovering plugins imports every plugin module (torch, transformers): tens of
seconds on a loaded machine. Run on the event loop it would stall every
request, ``/health`` included, so the server starts it in a background thread
at start-up and ``/plugins`` waits for it in the thread pool.
"""

from __future__ import annotations

import logging
import threading

from medplug.registry import PluginEntry, discover

log = logging.getLogger("medplug.serve")


class PluginCatalog:
    """The discovered plugins, found once in a background thread and then cached."""

    def __init__(self) -> None:
        self._entries: list[PluginEntry] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``loading``, ``ready`` or ``failed``; shown by ``/health``."""
        if not self._done.is_set():
            return "loading"
        return "failed" if self._error is not None else "ready"

    def start_warming(self) -> None:
        """Start discovery in a daemon thread (idempotent); returns at once."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._discover, name="medplug-discover", daemon=True).start()

    def entries(self, timeout_s: float | None = None) -> list[PluginEntry]:
        """The plugin entries; blocks (call it from a worker thread) until discovery ends."""
        self.start_warming()
        if not self._done.wait(timeout_s):
            raise TimeoutError("plugin discovery is still running")
        if self._error is not None:
            raise RuntimeError("plugin discovery failed") from self._error
        assert self._entries is not None
        return self._entries

    def _discover(self) -> None:
        try:
            self._entries = discover()
            log.info("plugins discovered: %d", len(self._entries))
        except BaseException as exc:  # reported through entries(); never kills the server
            self._error = exc
            log.error("plugin discovery failed: %s", type(exc).__name__)
        finally:
            self._done.set()
