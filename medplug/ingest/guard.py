"""Fence around third-party parsers and decoders: their failures become medplug errors.

pydicom, numpy and the decoder plugins raise whatever they like on hostile
input (``ValueError``, ``OverflowError``, ``NotImplementedError``, ``struct.error``,
and pyo3's ``PanicException``, a ``BaseException`` that ``except Exception``
misses and that cannot be pickled back from a batch worker). ``guarded``
turns every one of them into a ``DicomError`` with a named category and the
file's path; only interpreter control flow (Ctrl-C, exit) and ``MemoryError``
(a resource problem, not an input fault; sizes are checked before allocating)
pass through.

``quiet_warnings`` keeps library warnings (pydicom's "End of file reached
before delimiter", "Expected implicit VR, but found explicit VR") off the
terminal: they go to the ``medplug.ingest`` logger with a count.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medplug.errors import MedplugError
from medplug.ingest.errors import LOAD_CATEGORIES, DicomError

logger = logging.getLogger("medplug.ingest")

PASS_THROUGH: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    MemoryError,
)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# pydicom's wording when a read ran off the end of the file.
_TRUNCATION_HINTS = ("end of file", "truncated", "ran out of data", "unexpected eof")


def safe_message(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` with quoted values removed (they may be patient data), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode"):
        lines = lines[1:]  # pydicom lists every plugin's complaint; the first says enough
    text = _QUOTED.sub("'...'", lines[0]) if lines else ""
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:limit]


def looks_truncated(exc: BaseException | str) -> bool:
    """Whether an exception or warning text says the data ended early."""
    text = str(exc).lower()
    return isinstance(exc, EOFError) or any(hint in text for hint in _TRUNCATION_HINTS)


@contextmanager
def guarded(path: str | Path | None, category: str, doing: str) -> Iterator[None]:
    """Re-raise any non-medplug failure inside the block as ``DicomError(path, category)``.

    ``doing`` says what was attempted ("decoding pixel data"); the message keeps
    the exception type and its text without quoted values.
    """
    assert category in LOAD_CATEGORIES, category
    try:
        yield
    except MedplugError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - panics from Rust decoders are BaseException
        raise DicomError(path, category, f"{doing} failed ({safe_message(exc)})") from None


class _WarningCapture:
    """One process-wide capture shared by every thread, installed while any needs it.

    ``warnings.catch_warnings`` swaps process-global state and restores it on
    exit; two threads entering and leaving it interleaved (the REST server,
    the stack loader's pool) can leave another thread's capture installed for
    good. Here the first user installs the capture, the last removes it, and
    each record carries its thread, so every block sees its own warnings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._context: warnings.catch_warnings | None = None
        self._records: list[tuple[int, str]] = []

    def enter(self) -> int:
        with self._lock:
            if self._users == 0:
                self._context = warnings.catch_warnings()
                self._context.__enter__()
                warnings.simplefilter("always")
                warnings.showwarning = self._show
                self._records = []
            self._users += 1
            return len(self._records)

    def leave(self, start: int) -> list[str]:
        me = threading.get_ident()
        with self._lock:
            mine = [text for thread, text in self._records[start:] if thread == me]
            self._users -= 1
            if self._users == 0 and self._context is not None:
                self._context.__exit__(None, None, None)
                self._context = None
                self._records = []
        return mine

    def _show(self, message: Warning | str, *args: object, **kwargs: object) -> None:
        text = _QUOTED.sub("'...'", str(message))[:200]
        with self._lock:
            self._records.append((threading.get_ident(), text))


_CAPTURE = _WarningCapture()


@contextmanager
def quiet_warnings(path: str | Path | None, collected: list[str] | None = None) -> Iterator[None]:
    """Keep library warnings raised in this thread inside the block off the terminal.

    They are logged with a count (``medplug.ingest`` logger, INFO, quoted values
    removed); ``collected`` (optional) receives their texts, so callers can tell
    a truncated file from a merely odd one.
    """
    start = _CAPTURE.enter()
    try:
        yield
    finally:
        texts = _CAPTURE.leave(start)
        if collected is not None:
            collected.extend(texts)
        if texts:
            _log_warnings(path, texts)


def _log_warnings(path: str | Path | None, texts: list[str]) -> None:
    name = Path(path).name if path is not None else "input"
    distinct = list(dict.fromkeys(texts))
    logger.info(
        "%d library warning(s) while reading %s: %s%s",
        len(texts),
        name,
        "; ".join(distinct[:3]),
        " ..." if len(distinct) > 3 else "",
    )


__all__ = ["DicomError", "guarded", "logger", "looks_truncated", "quiet_warnings", "safe_message"]
