"""A killed run's spool folder (decoded volumes in transit) is removed by the next run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medplug.batch.spool import PREFIX, remove_stale_spools, run_spool_folder


def test_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"{PREFIX}{finished.stdout.strip()}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-def"
    unnamed = tmp_path / f"{PREFIX}xyz"  # an older medplug's folder: whose it is is unknown
    for folder in (dead, live, unnamed):
        folder.mkdir()
        (folder / "case-0.npy").write_bytes(b"\0" * 1024)
    assert remove_stale_spools(tmp_path) == 1
    assert not dead.exists() and live.exists() and unnamed.exists()


def test_the_run_folder_is_named_after_this_process_and_removed_after() -> None:
    with run_spool_folder() as folder:
        assert Path(folder).name.startswith(f"{PREFIX}{os.getpid()}-")
        (Path(folder) / "x.npy").write_bytes(b"\0")
    assert not Path(folder).exists()
