"""Helper processes that end with the run that started them.

``medplug batch`` forks its decoders from a fork server; a ``kill -9`` of the
run gives none of them a chance to stop: a pool worker blocks for ever on
its task queue (it holds the queue's write end itself, so never sees EOF),
and the fork server and the resource tracker live as long as the workers
hold their pipes (issue #13: all still running 75 s after the kill). So every
worker watches the run's process (``exit_with``, the pool's initializer) and
exits as soon as it is gone; the fork server and the resource tracker then
follow on their own (measured: all gone within 3 s).

The watch is a thread blocked on a pidfd (readable when the process ends:
no polling, no race with a reused pid); where pidfds are missing it polls
once every half second.
"""

from __future__ import annotations

import os
import select
import threading
import time

POLL_S = 0.5


def exit_with(pid: int) -> None:
    """Start a daemon thread that ends this process as soon as process ``pid`` has ended."""
    threading.Thread(target=_watch, args=(pid,), name="medplug-exit-with", daemon=True).start()


def _watch(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (old kernel, other OS): poll
        while _exists(pid):
            time.sleep(POLL_S)
        os._exit(1)
    select.select([fd], [], [])
    os._exit(1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
