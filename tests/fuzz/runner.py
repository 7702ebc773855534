"""Run ingest on every fuzz input in worker processes, with a time and memory guard.

Each input goes through ``load_image`` (scan, series selection with fallback,
header checks, decode) in a worker process that reports, per input:

- the outcome: ``error:<category>`` (a ``MedplugError``), ``loaded:<shape>``
  (and the volume passed the sanity checks below), ``invalid:<why>`` (loaded
  but with a non-finite or degenerate affine/spacing), ``escaped:<Type>`` (any
  other exception: a bug), or ``hang`` (no answer within the time guard);
- the peak RSS growth during that input (Linux: the VmHWM peak is reset
  before each input through ``/proc/self/clear_refs``);
- how many library warnings reached Python's ``warnings`` machinery (they would
  print on a terminal); ingest must log them instead.

Workers run under an address-space limit, so an input that makes ingest try
to allocate far beyond the bound ends as ``escaped:MemoryError`` rather than
taking the test machine down.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TIME_GUARD_S = 20.0
ADDRESS_SPACE_HEADROOM = 3 << 30  # beyond the worker's size after imports
RSS_BOUND_MIB = 512


@dataclass
class Result:
    name: str
    outcome: str
    seconds: float = 0.0
    peak_growth_mib: float = 0.0
    leaked_warnings: int = 0
    detail: str = ""


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        return sum(r.outcome.startswith(prefix) for r in self.results)

    @property
    def worst_memory(self) -> Result:
        return max(self.results, key=lambda r: r.peak_growth_mib)

    @property
    def slowest(self) -> Result:
        return max(self.results, key=lambda r: r.seconds)

    def figures(self) -> dict[str, object]:
        worst = self.worst_memory
        return {
            "inputs": len(self.results),
            "medplug_errors": self.count("error:"),
            "valid_loads": self.count("loaded:"),
            "invalid_loads": self.count("invalid:"),
            "escaped": self.count("escaped:"),
            "hangs": self.count("hang"),
            "leaked_warnings": sum(r.leaked_warnings for r in self.results),
            "worst_peak_growth_mib": round(worst.peak_growth_mib, 1),
            "worst_peak_input": worst.name,
            "slowest_s": round(self.slowest.seconds, 2),
            "slowest_input": self.slowest.name,
            "categories": dict(
                sorted(
                    Counter(
                        r.outcome for r in self.results if r.outcome.startswith("error:")
                    ).items()
                )
            ),
        }


# --------------------------------------------------------------------------- worker side


def _peak_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def check_one(path: Path) -> tuple[str, str, int]:
    """(outcome, detail, leaked warnings) for one input, in this process."""
    import warnings

    import numpy as np

    from medplug.errors import MedplugError
    from medplug.ingest import load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volume = load_image(path)
        except MedplugError as exc:
            outcome = f"error:{getattr(exc, 'category', type(exc).__name__)}"
            detail = str(exc)[:300]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - what the corpus hunts for
            outcome = f"escaped:{type(exc).__name__}"
            detail = str(exc)[:300]
        else:
            outcome, detail = _validate(volume, np)
    if caught:
        detail += " | leaked: " + "; ".join(str(w.message)[:80] for w in caught[:2])
    return outcome, detail, len(caught)


def _validate(volume: object, np: object) -> tuple[str, str]:
    affine = volume.affine  # type: ignore[attr-defined]
    array = volume.array  # type: ignore[attr-defined]
    if not np.all(np.isfinite(affine)):  # type: ignore[attr-defined]
        return "invalid:affine", "non-finite affine"
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9:  # type: ignore[attr-defined]
        return "invalid:affine", "degenerate affine"
    if array.dtype.kind != "f":
        return "invalid:dtype", str(array.dtype)
    if array.size and not np.isfinite(array).any():  # type: ignore[attr-defined]
        return "invalid:array", "no finite voxel"
    return "loaded:" + "x".join(str(n) for n in array.shape), ""


def worker_main() -> None:
    """Read input paths from stdin, answer one JSON line each."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    logging.disable(logging.CRITICAL)
    import medplug.ingest  # noqa: F401 - imports before the baseline and the limit

    vms = _status_kib("VmSize") * 1024
    limit = vms + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    can_reset = _peak_reset()
    print(json.dumps({"ready": True, "peak_reset": can_reset}), flush=True)
    for line in sys.stdin:
        path = Path(line.strip())
        before = _status_kib("VmRSS")
        if can_reset:
            _peak_reset()
        started = time.perf_counter()
        outcome, detail, leaked = check_one(path)
        seconds = time.perf_counter() - started
        peak = (
            _status_kib("VmHWM")
            if can_reset
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        )
        answer = {
            "outcome": outcome,
            "detail": detail,
            "leaked": leaked,
            "seconds": seconds,
            "growth_kib": max(0, peak - before),
        }
        print(json.dumps(answer), flush=True)


# --------------------------------------------------------------------------- parent side


class _Worker:
    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
                " import runner; runner.worker_main()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._read(120.0)

    def _read(self, timeout: float) -> dict | None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def run(self, name: str, path: Path) -> Result:
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        answer = self._read(TIME_GUARD_S)
        if answer is None:
            crashed = self.process.poll() is not None
            self.stop()
            return Result(name, "escaped:WorkerDied" if crashed else "hang", TIME_GUARD_S)
        return Result(
            name,
            answer["outcome"],
            answer["seconds"],
            answer["growth_kib"] / 1024,
            answer["leaked"],
            answer["detail"],
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def run_inputs(inputs: list[tuple[str, Path]], workers: int = 2) -> Summary:
    """Every input through its own check; results in input order."""
    results: list[Result | None] = [None] * len(inputs)
    next_index = iter(range(len(inputs)))
    lock = threading.Lock()

    def drain() -> None:
        worker = _Worker()
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                name, path = inputs[index]
                results[index] = worker.run(name, path)
        finally:
            worker.stop()

    threads = [threading.Thread(target=drain) for _ in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Summary([r for r in results if r is not None])


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from make_corpus import build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        cases = build_corpus(tmp)
        started = time.perf_counter()
        summary = run_inputs([(c.name, c.path) for c in cases])
        figures = summary.figures()
        figures["wall_s"] = round(time.perf_counter() - started, 1)
        for result in summary.results:
            if not result.outcome.startswith(("error:", "loaded:")) or result.leaked_warnings:
                print(f"{result.name}: {result.outcome} {result.detail}")
        print(json.dumps(figures, indent=1))
