"""medplug batch on a flaky hospital: PACS outages, JPEG 2000, a full disk, a killed run.

Everything real: Orthanc stopped and restarted under a running batch, a tmpfs
filled to the brim, ``kill -9`` of the CLI and psutil watching its children.
Backoff settings are short so the file stays quick.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import psutil
import pydicom
import pytest
from batch_support import (
    ORTHANC,
    OrthancServer,
    env_with,
    free_port,
)
from pydicom.uid import JPEG2000Lossless

from medplug.batch.dicomweb import (
    PacsError,
    RetryCount,
    RetryPolicy,
    retrieve_study,
    search_studies,
    with_retries,
)
from medplug.batch.loading import LoadJob, load_study
from medplug.batch.locators import DicomwebLocator

needs_orthanc = pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc not installed")
FAST_RETRIES = ["--retries", "60", "--retry-max-wait", "1", "--network-timeout", "2"]
J2K_CASE = "case0010"  # the sample cohort writes this case in JPEG 2000 Lossless


def batch_command(source: str, intensity_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "medplug.cli.main", "batch", source, "--plugin", "mean-intensity",
        "--model", str(intensity_dir), "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def records(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def upload(server: OrthancServer, folder: Path) -> None:
    """POST each file to Orthanc's REST API: stored as is, whatever its transfer syntax."""
    for path in sorted(folder.iterdir()):
        response = httpx.post(f"{server.url}/instances", content=path.read_bytes(), timeout=30)
        response.raise_for_status()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_exponentially_with_jitter_and_stays_capped() -> None:
    policy = RetryPolicy(first_wait=0.5, max_wait=10.0)
    rng = random.Random(1)
    for retry in range(12):
        step = min(10.0, 0.5 * 2**retry)
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert max(waits) - min(waits) > step / 4  # jittered, so clients spread out
    # The defaults ride out half a minute of outage even with the shortest draws.
    default = RetryPolicy()
    least = sum(min(default.max_wait, default.first_wait * 2**r) / 2 for r in range(10))
    assert least > 30


class _BusyThenOk(BaseHTTPRequestHandler):
    """QIDO-RS that answers 429 with ``Retry-After`` ``busy`` times, then one study."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        if server.busy > 0:  # type: ignore[attr-defined]
            server.busy -= 1  # type: ignore[attr-defined]
            self.send_response(429)
            self.send_header("Retry-After", server.retry_after)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if server.missing:  # type: ignore[attr-defined]
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def qido() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenOk)
    server.busy, server.missing, server.retry_after = 2, False, "2"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_is_honoured_and_retries_counted(qido: ThreadingHTTPServer) -> None:
    import requests

    url = f"http://127.0.0.1:{qido.server_port}/dicom-web"
    policy = RetryPolicy(retries=3, first_wait=0.01, max_wait=0.05)

    def get() -> list:
        response = requests.get(f"{url}/studies", timeout=5)
        response.raise_for_status()
        return response.json()

    waits: list[float] = []
    count = RetryCount()
    assert len(with_retries(get, policy, "search", count, sleep=waits.append)) == 1
    assert count.retries == 2 and waits == [2.0, 2.0]  # the server's Retry-After, not 0.05
    # dicomweb-client's own retrying is off: ours counts each 429 once.
    qido.busy, qido.retry_after = 2, "0"  # type: ignore[attr-defined]
    count = RetryCount()
    found = list(search_studies(url, {}, policy, count))
    assert [item["0020000D"]["Value"] for item in found] == [["1.2.3"]]
    assert count.retries == 2


def test_a_permanent_http_error_is_not_retried(qido: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{qido.server_port}/dicom-web"
    qido.busy, qido.missing = 0, True  # type: ignore[attr-defined]
    count = RetryCount()
    with pytest.raises(PacsError, match="HTTP 404"):
        list(search_studies(url, {}, RetryPolicy(retries=5), count))
    assert count.retries == 0


# --------------------------------------------------------------------------- PACS link


@needs_orthanc
def test_orthanc_outage_mid_run_is_ridden_out_and_counted(
    intensity_site: Path, intensity_dir: Path, tmp_path: Path, sample_cohort: Path
) -> None:
    """Orthanc frozen (timeouts), then stopped and restarted on its storage: every study ok."""
    server = OrthancServer(tmp_path / "orthanc").start()
    out = tmp_path / "out"
    cases = [f"case{i:04d}" for i in (1, 2, 3, 5, 6, 8)]  # uncompressed / RLE: quick to load
    try:
        for case in cases:
            upload(server, sample_cohort / "cases" / case / "dicom")
        run = subprocess.Popen(
            batch_command(server.dicomweb, intensity_dir, out, "--workers", "1",
                          "--batch-size", "1", *FAST_RETRIES),
            env=env_with(intensity_site) | {"MEDPLUG_TEST_PLUGIN_SLEEP": "0.6"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: len(records(out)) >= 1, 120, "the first finished study")
            assert server.process is not None
            started = time.monotonic()
            server.process.send_signal(signal.SIGSTOP)  # a hung PACS: requests time out
            time.sleep(3)
            server.process.send_signal(signal.SIGCONT)
            server.stop()  # a PACS restart: connections refused meanwhile
            time.sleep(3)
            server.start()
            outage_s = time.monotonic() - started
            stdout, stderr = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 0, stderr
        found = records(out)
        assert len(found) == len(cases)
        assert [r["status"] for r in found] == ["ok"] * len(cases), [r["errors"] for r in found]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["done"] == len(cases) and summary["failed"] == 0
        assert summary["retries"] >= 1 and summary["retried_studies"] >= 1
        assert summary["retries"] == sum(r["provenance"]["network_retries"] for r in found)
        assert (
            f"{summary['retried_studies']} studies needed {summary['retries']} network retries"
            in stdout
        )
        log = (out / "batch.log").read_text()
        assert "network retries" in log
        assert not any(r["study_uid"] in log for r in found)  # hashes only, no UIDs
        for record in found:  # every SR arrived exactly once, retried pushes included
            series = server.series_of_study(record["study_uid"])
            assert [s["00080060"]["Value"] for s in series].count(["SR"]) == 1
        print(f"outage {outage_s:.1f} s; summary {summary}; {stdout.strip()}")
    finally:
        server.stop()


@needs_orthanc
def test_source_down_at_start_is_one_clear_line(
    intensity_site: Path, intensity_dir: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        batch_command(url, intensity_dir, tmp_path / "out", "--retries", "2",
                      "--retry-max-wait", "0.2"),
        env=env_with(intensity_site), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert url in line and "Connection refused" in line and "3 attempts" in line, line
    assert time.monotonic() - started < 60


@needs_orthanc
def test_jpeg2000_study_is_fetched_as_stored_and_decoded_locally(
    tmp_path: Path, sample_cohort: Path
) -> None:
    from medplug.ingest import load_image

    folder = sample_cohort / "cases" / J2K_CASE / "dicom"
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == JPEG2000Lossless
    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        upload(server, folder)
        study_uid = str(first.StudyInstanceUID)
        fetched = tmp_path / "fetched"
        fetched.mkdir()
        count = RetryCount()
        written = retrieve_study(server.dicomweb, study_uid, fetched, RetryPolicy(), count)
        assert written == len(list(folder.iterdir())) and count.retries == 0
        for path in fetched.iterdir():  # the server sent what it stores, no transcoding
            header = pydicom.dcmread(path, stop_before_pixels=True)
            assert header.file_meta.TransferSyntaxUID == JPEG2000Lossless
        locator = DicomwebLocator(server.dicomweb, study_uid)
        job = LoadJob(key=study_uid, case_id="j2k", locator=locator, spool_dir=str(tmp_path))
        loaded = load_study(job)
        assert loaded.error is None, loaded.error
        assert loaded.case is not None and loaded.case.image is not None
        expected = load_image(folder).array
        np.testing.assert_array_equal(loaded.case.image.array, expected)  # lossless, decoded here
    finally:
        server.stop()


# --------------------------------------------------------------------------- storage


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 3 MiB tmpfs (we need root and mount(2); skipped where either is missing)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def folder_source(tmp_path: Path, sample_cohort: Path, cases: list[str]) -> Path:
    source = tmp_path / "source"
    for case in cases:
        shutil.copytree(sample_cohort / "cases" / case / "dicom", source / case)
    return source


def test_disk_full_stops_with_one_line_and_resume_finishes_every_study_once(
    intensity_site: Path,
    intensity_dir: Path,
    tmp_path: Path,
    sample_cohort: Path,
    small_disk: Path,
) -> None:
    cases = [f"case{i:04d}" for i in (1, 2, 3, 5, 6, 8, 9, 12)]
    source = folder_source(tmp_path, sample_cohort, cases)
    out = small_disk / "out"
    # Leave ~260 KiB: the journal and a few studies' SR and secondary capture fit, not all
    # (the SC: a whole-volume Parametric Map per study would not fit the 3 MiB disk at all).
    ballast = small_disk / "ballast"
    free = shutil.disk_usage(small_disk).free
    ballast.write_bytes(b"\0" * (free - 260 * 1024))
    command = batch_command(str(source), intensity_dir, out, "--workers", "1", "--batch-size", "2",
                            "--heatmap-format", "sc")  # fmt: skip
    full = subprocess.run(
        command, env=env_with(intensity_site), capture_output=True, text=True, timeout=180
    )
    assert full.returncode != 0, full.stdout
    line = one_error_line(full.stderr)
    assert "no space left on device" in line or "disk is full" in line, line
    assert "rerun the same command to resume" in line
    finished_before = len(records(out))
    assert finished_before < len(cases)
    assert all(r["status"] == "ok" for r in records(out))  # none was failed for the disk

    ballast.unlink()
    resumed = subprocess.run(
        command, env=env_with(intensity_site), capture_output=True, text=True, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr
    found = records(out)
    assert len(found) == len(cases) and len({r["study_uid"] for r in found}) == len(cases)
    assert all(r["status"] == "ok" for r in found)
    assert len(list((out / "sr").glob("*.dcm"))) == len(cases)
    assert not list(out.rglob("*.partial"))
    print(f"first run finished {finished_before} of {len(cases)} before the disk filled")


def test_storage_problems_are_told_apart_from_bad_studies(tmp_path: Path) -> None:
    import errno
    import sqlite3

    from medplug.batch.loading import error_info
    from medplug.batch.storage import DISK_FULL, NOT_WRITABLE, storage_problem

    denied = PermissionError(errno.EACCES, "Permission denied", "out/sr/s-1.dcm")
    assert storage_problem(denied) == (NOT_WRITABLE, "permission denied (out/sr/s-1.dcm)")
    assert storage_problem(denied, writing=False) is None  # an unreadable input: that study's
    assert error_info("load", denied)["reason"] == "unexpected PermissionError"
    full = OSError(errno.ENOSPC, "No space left on device")
    assert storage_problem(full, writing=False) == (DISK_FULL, "no space left on device")
    wrapped = RuntimeError("push failed")
    wrapped.__cause__ = full
    assert error_info("output", wrapped)["reason"] == DISK_FULL
    path = tmp_path / "journal.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        read_only.execute("INSERT INTO t VALUES (1)")
    assert storage_problem(caught.value) == (NOT_WRITABLE, "the journal is read-only")
    assert storage_problem(ValueError("bad pixel data")) is None


def test_read_only_output_is_one_clear_line(
    intensity_site: Path,
    intensity_dir: Path,
    tmp_path: Path,
    sample_cohort: Path,
    small_disk: Path,
) -> None:
    source = folder_source(tmp_path, sample_cohort, ["case0001"])
    (small_disk / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = subprocess.run(
        batch_command(str(source), intensity_dir, small_disk / "out", "--workers", "1"),
        env=env_with(intensity_site), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "read-only file system" in line and str(small_disk / "out") in line, line


# --------------------------------------------------------------------------- processes


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def test_kill_9_of_the_run_leaves_no_process_behind(
    intensity_site: Path, intensity_dir: Path, tmp_path: Path, sample_cohort: Path
) -> None:
    source = folder_source(tmp_path, sample_cohort, [f"case{i:04d}" for i in (1, 2, 3, 5)])
    out = tmp_path / "out"
    run = subprocess.Popen(
        batch_command(str(source), intensity_dir, out, "--workers", "2", "--batch-size", "1"),
        env=env_with(intensity_site) | {"MEDPLUG_TEST_PLUGIN_SLEEP": "5"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    main = psutil.Process(run.pid)
    children: list[psutil.Process] = []
    try:
        # The run is under way once the first study is claimed: pool, fork server and
        # resource tracker are up, and a worker is busy or waiting.
        wait_for(lambda: len(main.children(recursive=True)) >= 4, 120, "the worker processes")
        wait_for(lambda: (out / "batch.log").exists(), 60, "the batch log")
        time.sleep(1.0)
        children = main.children(recursive=True)
        names = sorted(" ".join(p.cmdline())[:80] for p in children)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        killed = time.monotonic()
        ended: dict[int, float] = {}
        # Measured 0.02-0.1 s for the workers and fork server and 1-3.5 s for the resource
        # tracker (it cleans up after them) on 2 cores at load 10; 8 s is the hang guard.
        while time.monotonic() < killed + 8 and len(ended) < len(children):
            for process in children:
                if process.pid not in ended and _gone(process):
                    ended[process.pid] = time.monotonic() - killed
            time.sleep(0.02)
        left = [p for p in children if not _gone(p)]
        print(f"descendants {names}; gone after {sorted(ended.values())} s")
        assert not left, f"still running 8 s after kill -9: {[p.cmdline() for p in left]}"
    finally:  # never leave a process behind, whatever failed
        if run.poll() is None:
            children = main.children(recursive=True)
            run.kill()
            run.wait()
        for process in children:
            if not _gone(process):
                process.kill()
