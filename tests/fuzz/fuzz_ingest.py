"""Bounded fuzzing of DICOM ingest with hypothesis (``make fuzz``).

Each example takes one of pydicom's small test files and applies a few byte
mutations (bit flips, overwritten bytes, truncation, inserted bytes, lying
32-bit lengths), biased to the header and the start of the pixel data, then
calls ``load_image`` on the result. Any exception other than a
``MedplugError``, or an input running past the time guard, is a finding:
hypothesis shrinks it and the minimal mutation list is written to
``fuzz-findings.json`` (add it to ``REGRESSIONS`` in ``make_corpus.py``).

    python tests/fuzz/fuzz_ingest.py --seconds 180
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import tempfile
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from medplug.errors import MedplugError
from medplug.ingest import load_image

SEEDS = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_small_odd.dcm",
    "emri_small_RLE.dcm",
)
TIME_GUARD_S = 10
INTERESTING_U32 = (0, 1, 2, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF)
_DATA = {name: Path(get_testdata_file(name)).read_bytes() for name in SEEDS}


class Hang(Exception):
    """The input ran past the time guard."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no result within {TIME_GUARD_S} s")


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("set"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.floats(0, 1), st.sampled_from(INTERESTING_U32)),
)


def mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    """Apply mutations; positions are fractions of the first 2 kB (header) or of the file."""
    out = bytearray(data)
    for kind, where, value in mutations:
        if not out:
            break
        span = len(out) if where > 0.8 else min(len(out), 2048)
        pos = min(int(where * span), len(out) - 1)
        if kind == "flip":
            out[pos] ^= 1 << value
        elif kind == "set":
            out[pos] = value
        elif kind == "cut":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = bytes([value]) * 4
        elif kind == "u32":
            out[pos : pos + 4] = value.to_bytes(4, "little")
    return bytes(out)


CALLS = [0]


def check(seed: str, mutations: list[tuple[str, float, int]], folder: Path) -> None:
    """The property: ingest ends in a medplug error or a volume, within the guard."""
    CALLS[0] += 1
    path = folder / "input.dcm"
    path.write_bytes(mutate(_DATA[seed], mutations))
    signal.alarm(TIME_GUARD_S)
    try:
        load_image(path)
    except MedplugError:
        pass
    finally:
        signal.alarm(0)


def make_test(folder: Path, max_examples: int):
    """A hypothesis test over (seed file, mutation list)."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4))
    def fuzz(seed: str, mutations: list[tuple[str, float, int]]) -> None:
        check(seed, mutations, folder)

    return fuzz


def run(seconds: float, findings_path: Path, batch: int = 200) -> dict[str, object]:
    """Fuzz in batches until ``seconds`` pass; every shrunk failure goes to ``findings_path``."""
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    # Bound memory: an input that makes ingest allocate gigabytes is a finding (MemoryError).
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as handle:
        vms = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vms + (3 << 30), hard))
    findings: list[dict[str, object]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        while time.monotonic() - started < seconds:
            test = make_test(Path(tmp), batch)
            try:
                test()
            except BaseException as exc:  # noqa: BLE001 - every escape is a finding
                if isinstance(exc, KeyboardInterrupt):
                    raise
                example = getattr(exc, "__notes__", [""])
                findings.append(
                    {"exception": f"{type(exc).__name__}: {str(exc)[:300]}", "example": example}
                )
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "examples": CALLS[0],
        "findings": findings,
    }
    findings_path.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings.json"))
    args = parser.parse_args()
    result = run(args.seconds, args.out)
    print(
        f"{result['examples']} examples in {result['seconds']} s, "
        f"{len(result['findings'])} finding(s) -> {args.out}"
    )
    for finding in result["findings"]:  # type: ignore[union-attr]
        print(finding)
    raise SystemExit(1 if result["findings"] else 0)
