"""The batch's heap trimmer gives freed holes back to the system, and only past its slack.

Run in a fresh interpreter, so glibc's allocator starts from a known state.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medplug.batch.memory import _glibc, resident_bytes

SCENARIO = """
import json
import numpy as np
from medplug.batch.memory import HeapTrimmer, resident_bytes

mib = lambda: resident_bytes() >> 20
# Freeing one 16 MiB mmapped block makes glibc serve blocks of that size from the heap.
big = np.ones(16 << 20, dtype=np.uint8)
del big
trimmer = HeapTrimmer(slack_bytes=64 << 20)
quiet = trimmer.after_batch()  # nothing grew yet
kept, blocks = [], []
for _ in range(30):  # 120 MiB of arrays with small long-lived objects between them
    blocks.append(np.ones(4 << 20, dtype=np.uint8))
    kept.append(bytearray(64 << 10))
del blocks
freed = mib()
trimmed = trimmer.after_batch()
print(json.dumps({"quiet": quiet, "freed": freed, "trimmed": trimmed, "after": mib(),
                  "again": trimmer.after_batch(), "trims": trimmer.trims}))
"""


@pytest.mark.skipif(_glibc() is None or resident_bytes() is None, reason="needs glibc and /proc")
def test_trimmer_returns_freed_heap_pages_once_past_its_slack() -> None:
    run = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["quiet"] is False
    assert found["trimmed"] is True and found["trims"] == 1
    assert found["freed"] - found["after"] > 80  # MiB handed back, of the 120 freed
    assert found["again"] is False  # below the slack again: no second trim


def test_resident_size_is_read_on_linux() -> None:
    if sys.platform.startswith("linux"):
        size = resident_bytes()
        assert size is not None and size > 10 << 20
