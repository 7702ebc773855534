"""One thread policy for every entry point: CLI, ``load_plugin``, napari, serve, batch, train.

Torch's default, one thread per core, is the wrong choice for medplug's work:
a single case through a small network spends more time synchronising threads
than computing, and on a shared machine (or next to medplug's own worker
processes) every extra thread waits for a core. Measured on the 2-core shared
box: one-case inference 7-13x slower at 2 threads than at 1.

The policy, first match wins:

1. an explicit request: ``--threads N`` (``medplug --threads N ...``), the
   ``threads`` argument, or ``MEDPLUG_THREADS``;
2. ``OMP_NUM_THREADS`` (the variable every BLAS/OpenMP library already reads);
3. otherwise the cores left free: usable cores (CPU affinity) minus the
   process's own worker processes (``reserved``) minus cores other processes
   keep busy (the 1-minute load average), split between ``parallel`` model
   threads (e.g. serve's workers); at least 1.

The choice is applied to torch (and recorded for ONNX Runtime sessions) and
logged once per process at INFO on ``medplug.threads``.
"""

from __future__ import annotations

import logging
import os
import sys

THREADS_ENV = "MEDPLUG_THREADS"
_log = logging.getLogger(__name__)
_chosen: int | None = None
_logged = False


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, containers' cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        _log.warning("%s=%r is not a whole number; ignored", name, value)
        return None
    return number if number > 0 else None


def _busy_cores(cores: int) -> int:
    """Cores other processes keep busy now, from the 1-minute load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0
    return min(cores - 1, int(load))


def choose_threads(
    requested: int | None = None, reserved: int = 0, parallel: int = 1
) -> tuple[int, str]:
    """Threads for one model, and why (see the module docstring for the order)."""
    if requested is not None and requested > 0:
        return requested, "requested"
    from_env = _env_int(THREADS_ENV)
    if from_env is not None:
        return from_env, THREADS_ENV
    from_omp = _env_int("OMP_NUM_THREADS")
    if from_omp is not None:
        return from_omp, "OMP_NUM_THREADS"
    cores = usable_cores()
    free = cores - max(reserved, 0) - _busy_cores(cores)
    threads = max(1, free // max(parallel, 1))
    reason = f"{cores} cores, {max(reserved, 0)} for workers, {_busy_cores(cores)} busy"
    if parallel > 1:
        reason += f", {parallel} parallel models"
    return threads, reason


def apply_thread_policy(requested: int | None = None, reserved: int = 0, parallel: int = 1) -> int:
    """Choose the thread count and apply it to torch; idempotent, logged once.

    Without an explicit request a second call keeps the first choice, so the
    library (``load_plugin``) never overrides what an entry point decided.
    """
    global _chosen, _logged
    if _chosen is not None and requested is None and reserved == 0 and parallel == 1:
        threads, reason = _chosen, "kept"
    else:
        threads, reason = choose_threads(requested, reserved, parallel)
    _chosen = threads
    # Libraries read these when they start their pools: torch, once imported, reads
    # OMP_NUM_THREADS, so a process that has not imported it yet pays nothing here.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if not _logged:
        _log.info("using %d thread(s) for inference (%s)", threads, reason)
        _logged = True
    return threads


def current_threads() -> int:
    """The thread count chosen for this process (the policy's default if none yet)."""
    return _chosen if _chosen is not None else choose_threads()[0]
