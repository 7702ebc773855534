"""Keep the inference process's memory flat over a long batch.

Every study passes through arrays of tens of MiB (the decoded volume, its
float copies, the Grad-CAM map on the input grid). glibc serves such blocks
by ``mmap`` at first, but each time one is freed it raises its threshold to
that size, so from then on they come from the heap arenas of whichever
thread allocated them (main, torch's, the writer's), and the freed holes
between long-lived blocks are not given back. Measured on 256x256x64 CTs, the
inference process grew from 1,319 MiB after 50 studies to 1,716 MiB after 200.
Trimming the heaps hands those holes back to the system, but every page given
back is faulted in again by the next batch: trimming after every batch cost
about 10% more CPU. So ``HeapTrimmer`` trims only once the process has grown
by a set slack since its last trim, which bounds the growth at a few trims per
run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger("medplug.batch")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_heap() -> bool:
    """Give the heaps' free pages back to the system (glibc only); True if it ran."""
    libc = _glibc()
    if libc is None:  # musl, macOS: their allocators return large blocks themselves
        return False
    libc.malloc_trim(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux ``/proc``), or None where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Trims the heaps whenever the process has grown ``slack_bytes`` past its last trim."""

    def __init__(self, slack_bytes: int = 128 << 20) -> None:
        self.slack_bytes = slack_bytes
        self.floor = resident_bytes()
        self.trims = 0

    def after_batch(self) -> bool:
        """Call once a batch's arrays are released; True if it trimmed."""
        now = resident_bytes()
        if now is None or self.floor is None or now < self.floor + self.slack_bytes:
            return False
        if not release_free_heap():
            self.floor = None  # nothing to trim with on this platform: stop measuring
            return False
        self.trims += 1
        after = resident_bytes()
        log.debug("heap trimmed: %d -> %s MiB resident", now >> 20, after and after >> 20)
        self.floor = after if after is not None else now
        return True
