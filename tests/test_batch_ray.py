"""medplug batch --engine ray on a real two-node Ray cluster (ray.cluster_utils.Cluster).

The cluster runs on 127.0.0.1: a head and a worker node of two logical CPUs
each (one inference actor and one decode/write task apiece), no dashboard,
100 MB object stores. Its processes get the test plugin on PYTHONPATH and a
0.5 s sleep per prediction, so a run lasts long enough to be hurt mid-way.
The driver is the ``medplug`` CLI in a subprocess, as a user would run it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from batch_support import ORTHANC, OrthancServer, env_with, intensity_model
from test_batch import cohort_rows, read_jsonl, run_medplug

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # every Ray address is 127.0.0.1
NODE = {"num_cpus": 2, "object_store_memory": 100 << 20}


@pytest.fixture(scope="module")
def cluster(intensity_site: Path) -> Iterator[Cluster]:
    """Two Ray nodes whose workers import the test plugin; removed (and checked) after."""
    saved = dict(os.environ)
    os.environ.update(
        LOOPBACK
        | {
            "PYTHONPATH": env_with(intensity_site)["PYTHONPATH"],
            "MEDPLUG_TEST_PLUGIN_SLEEP": "0.5",
            "OMP_NUM_THREADS": "1",
        }
    )
    try:
        cluster = Cluster(initialize_head=True, head_node_args=NODE | {"include_dashboard": False})
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The intensity plugin's model with its threshold inside the sample cohort's spread
    (mean HU -583.5 to -582.3), so the engines are compared on both labels and on
    probabilities far from 0 and 1."""
    return intensity_model(tmp_path_factory.mktemp("split"), centre=-583.3, scale=0.2)


def ray_args(cluster: Cluster, source: Path | str, model: Path, out: Path) -> list[str]:
    return ["batch", str(source), "--plugin", "mean-intensity", "--model", str(model),
            "--out", str(out), "--engine", "ray", "--ray-address", cluster.address,
            "--batch-size", "2", "--no-progress"]  # fmt: skip


def sr_content(path: Path) -> list[tuple]:
    """The SR's content tree and evidence, without UIDs and creation dates/times."""
    sr = pydicom.dcmread(path)
    items = []

    def walk(dataset: pydicom.Dataset, depth: int) -> None:
        for item in dataset.get("ContentSequence", []):
            value = None
            if item.ValueType == "NUM":
                value = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE":
                value = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "TEXT":
                value = item.TextValue
            name = item.ConceptNameCodeSequence[0].CodeValue
            items.append((depth, item.ValueType, name, value))
            walk(item, depth + 1)

    walk(sr, 0)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    cited = sorted(i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence)
    return items + [("evidence", sr.StudyInstanceUID, evidence.SeriesInstanceUID, tuple(cited))]


def done_count(journal: Path) -> int:
    try:
        with sqlite3.connect(journal) as db:
            return db.execute("SELECT COUNT(*) FROM studies WHERE state='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for_done(journal: Path, process: subprocess.Popen, count: int) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if journal.exists() and done_count(journal) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"never reached {count} done studies (exit {process.poll()})")


def inference_actor_processes(driver: subprocess.Popen, seconds: float = 30.0) -> list:
    """The inference actor's processes, polled while the run goes on.

    Ray retitles an actor's process between calls, so one look can miss it on a
    quiet machine; look again until it shows or the driver ends.
    """
    import psutil

    deadline = time.time() + seconds
    while time.time() < deadline and driver.poll() is None:
        found = [
            process
            for process in psutil.process_iter(["cmdline"])
            if "MapBatches(InferenceActor)" in " ".join(process.info["cmdline"] or [])
        ]
        if found:
            return found
        time.sleep(0.1)
    return []


def assert_every_study_once(cohort: Path, out: Path) -> list[dict]:
    records = read_jsonl(out / "results.jsonl")
    uids = sorted(r["study_uid"] for r in records)
    assert uids == sorted(row["study_uid"] for row in cohort_rows(cohort))
    assert all(r["status"] == "ok" for r in records), [r["errors"] for r in records]
    assert len(list((out / "sr").glob("*.dcm"))) == len(records)
    assert not list(out.rglob("*.partial"))
    with sqlite3.connect(out / "journal.sqlite") as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())
    assert states == {"done": len(records)}
    return records


def start_driver(args: list[str], site: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "medplug.cli.main", *args],
        env=env_with(site) | LOOPBACK,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_results(
    cluster: Cluster,
    sample_cohort: Path,
    intensity_site: Path,
    split_model: Path,
    tmp_path: Path,
) -> None:
    local = run_medplug(
        ["batch", str(sample_cohort / "cases"), "--plugin", "mean-intensity",
         "--model", str(split_model), "--out", str(tmp_path / "local"), "--no-progress"],
        intensity_site,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    remote = run_medplug(
        ray_args(cluster, sample_cohort / "cases", split_model, tmp_path / "ray"),
        intensity_site,
        env=LOOPBACK,
    )
    assert remote.returncode == 0, remote.stderr
    assert "12 done, 0 failed" in remote.stdout

    by_uid = {r["study_uid"]: r for r in assert_every_study_once(sample_cohort, tmp_path / "ray")}
    local_records = read_jsonl(tmp_path / "local" / "results.jsonl")
    assert {r["study_uid"] for r in local_records} == set(by_uid)
    labels = set()
    for mine in local_records:
        theirs = by_uid[mine["study_uid"]]
        assert theirs["provenance"]["attempt"] == 1
        (a,), (b,) = mine["results"], theirs["results"]
        assert a["prediction"]["label"] == b["prediction"]["label"]
        labels.add(a["prediction"]["label"])
        for name, p in a["prediction"]["probabilities"].items():
            assert b["prediction"]["probabilities"][name] == pytest.approx(p, abs=1e-6)
        assert set(theirs["provenance"]["files"]) == set(mine["provenance"]["files"])
        assert sr_content(tmp_path / "ray" / theirs["provenance"]["files"]["sr"]) == sr_content(
            tmp_path / "local" / mine["provenance"]["files"]["sr"]
        )
    assert labels == {"lesion", "no_lesion"}  # both outcomes compared, not one by luck


@pytest.fixture
def orthanc(tmp_path: Path, sample_cohort: Path) -> Iterator[OrthancServer]:
    """A real Orthanc holding the sample cohort, the source and the push destination."""
    if not os.access(ORTHANC, os.X_OK):
        pytest.skip("Orthanc is not installed")
    import httpx

    server = OrthancServer(tmp_path / "orthanc").start()
    try:  # through the REST API: stored as is, RLE, JPEG-LS and JPEG 2000 studies too
        for path in sorted((sample_cohort / "cases").glob("*/dicom/*")):
            response = httpx.post(f"{server.url}/instances", content=path.read_bytes())
            response.raise_for_status()
        yield server
    finally:
        server.stop()


def sr_instances(orthanc: OrthancServer, study_uid: str) -> int:
    """SR instances Orthanc holds in the study (each push of a redone study must replace)."""
    series = [s for s in orthanc.series_of_study(study_uid) if s["00080060"]["Value"] == ["SR"]]
    return sum(
        len(orthanc.get(f"/dicom-web/studies/{study_uid}/series/{uid}/instances"))
        for uid in (s["0020000E"]["Value"][0] for s in series)
    )


@pytest.mark.slow
@pytest.mark.orthanc
def test_driver_killed_then_actor_and_node_lost_still_give_every_study_exactly_once(
    cluster: Cluster,
    orthanc: OrthancServer,
    sample_cohort: Path,
    intensity_site: Path,
    split_model: Path,
    tmp_path: Path,
) -> None:
    """DICOMweb source (WADO-RS on the workers, STOW-RS of each SR back into its study).

    ``kill -9`` of the driver mid-run; the rerun resumes from the journal and, mid-way,
    loses its inference actor (SIGKILL of its process: Ray restarts it and retries its
    batch) and then the worker node (its tasks and objects are redone on the head).
    Every study (some RLE, JPEG-LS, JPEG 2000) is recorded once, and Orthanc holds one
    SR per study.
    """

    out = tmp_path / "out"
    args = ray_args(cluster, orthanc.dicomweb, split_model, out)
    journal = out / "journal.sqlite"
    driver = start_driver(args, intensity_site)
    try:
        wait_for_done(journal, driver, 3)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = done_count(journal)
    assert 3 <= before < 12

    driver = start_driver(args, intensity_site)
    try:
        wait_for_done(journal, driver, before + 1)
        actors = inference_actor_processes(driver)
        assert actors, "no inference actor process found"
        for actor in actors:
            actor.kill()
        wait_for_done(journal, driver, before + 3)
        worker_node = next(node for node in cluster.list_all_nodes() if not node.head)
        cluster.remove_node(worker_node)
        assert driver.wait(timeout=240) == 0, driver.stderr.read() if driver.stderr else ""
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    records = assert_every_study_once(sample_cohort, out)
    assert sum(r["provenance"]["attempt"] == 2 for r in records) == 12 - before
    assert all(r["provenance"]["pushed_to"].startswith("STOW-RS") for r in records)
    assert {r["provenance"]["source"] for r in records} == {"dicomweb"}
    assert all(sr_instances(orthanc, r["study_uid"]) == 1 for r in records)


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    """``sys.modules['ray'] = None`` makes ``import ray`` fail as if it were not installed."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from medplug.cli.main import app\n"
        f"app(['batch', {str(tmp_path)!r}, '--plugin', 'x', '--out', {str(tmp_path / 'o')!r},"
        " '--engine', 'ray'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert 'pip install "medplug[ray]"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
