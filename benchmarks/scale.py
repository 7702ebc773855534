"""Benchmark: ``medplug batch --engine local`` vs ``--engine ray`` (one node, two nodes).

200 small generated CT studies (the sample cohort's 64x64x32 series), the
same command three times in one run: the local engine (2 decoding processes,
inference in the main process), the ray engine on a one-node Ray cluster, and
on two simulated nodes (``ray.cluster_utils.Cluster``) sharing the same cores.
Each Ray cluster is started before its run and is not timed (on a real cluster
it is already up); everything else (CLI start-up, imports, Ray workers'
imports, plugin loading in the actors, Ray Data planning) is.

The logical CPU slots are the same in every run: one inference process plus
two decode/write processes (one node: 3 CPUs; two nodes: 2 + 1).

Measured: wall time of the CLI, studies/min, CPU seconds per study (user +
system of every process of the run: the CLI and, for Ray, every cluster
process, sampled every 0.2 s), peak RSS per process (grouped by role), the
object store's spilled bytes (Ray's memory stats, summed over nodes), the
1-minute load average before and after each run, and the per-stage seconds per
study from ``results.jsonl`` (``timing.load_s`` / ``predict_s`` / ``write_s``),
which ``docs/scale-out.md``'s capacity plan uses.

Plugin: the mean-intensity test plugin (``tests/batch_support.py``): no model
time, so the figures are the engines' own overhead, Ray's worst case.

    python benchmarks/scale.py        # make bench-scale
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.md"
WORK = ROOT / "benchmarks" / "work" / "scale"
N_STUDIES = int(os.environ.get("BENCH_SCALE_STUDIES", "200"))
BATCH_SIZE = 16
OBJECT_STORE = 200 << 20
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # every Ray address on 127.0.0.1


@dataclass
class Sampled:
    """Per process: its role, peak RSS and CPU seconds since the run started."""

    role: dict[int, str] = field(default_factory=dict)
    peak_rss: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    baseline: dict[int, float] = field(default_factory=dict)


def role_of(process: psutil.Process, driver_pid: int | None) -> str:
    try:
        cmdline = " ".join(process.cmdline())
        name = process.name()
    except psutil.Error:
        return "gone"
    if process.pid == driver_pid:
        return "driver (medplug batch)"
    for daemon in ("raylet", "gcs_server"):  # before the workers: raylet's own command
        if name == daemon or cmdline.split(" ")[0].endswith(f"/{daemon}"):  # names theirs
            return f"ray {daemon}"
    if "InferenceActor" in cmdline:
        return "ray inference actor"
    if cmdline.startswith("ray::") or name.startswith("ray::") or "default_worker.py" in cmdline:
        return "ray worker (decode/write tasks)"
    if "forkserver" in cmdline:
        return "local fork server + decode/write workers"
    if "resource_tracker" in cmdline:
        return "local resource tracker"
    if "medplug.cli.main" in cmdline:
        return "driver's header-scan workers"
    for known in ("log_monitor", "dashboard", "runtime_env", "monitor"):
        if known in name or known in cmdline:
            return f"ray {known}"
    return name


class TreeSampler:
    """Samples every descendant of this process (the CLI, and the Ray cluster we started)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.driver_pid: int | None = None  # set once the CLI is started
        self.sampled = Sampled()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        data = self.sampled
        for process in psutil.Process().children(recursive=True):
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    cpu = times.user + times.system
                    rss = process.memory_info().rss
            except psutil.Error:
                continue
            pid = process.pid
            if first:
                data.baseline[pid] = cpu
            role = role_of(process, self.driver_pid)  # a Ray worker's title follows its task
            if data.role.get(pid) != "ray inference actor" and role != "gone":
                data.role[pid] = role
            data.peak_rss[pid] = max(rss, data.peak_rss.get(pid, 0))
            data.cpu[pid] = cpu - data.baseline.get(pid, 0.0)


@dataclass
class Run:
    name: str
    nodes: int
    wall_s: float
    records: list[dict]
    sampled: Sampled
    spilled_bytes: int | None
    load_before: float
    load_after: float

    @property
    def cpu_s(self) -> float:
        return sum(self.sampled.cpu.values())


def setup() -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from batch_support import install_intensity_plugin, intensity_model

    from medplug.sampledata import generate_cohort

    WORK.mkdir(parents=True, exist_ok=True)
    site = WORK / "plugin" / "site"
    if not site.is_dir():
        site = install_intensity_plugin(WORK / "plugin")
    model = intensity_model(WORK / "model", centre=-583.3, scale=0.2)
    cohort = WORK / f"cohort-{N_STUDIES}"
    if not (cohort / "manifest.csv").is_file():
        print(f"generating {N_STUDIES} studies ...", flush=True)
        generate_cohort(cohort, n_cases=N_STUDIES, seed=3)
    return site, model, cohort


def cli_env(site: Path) -> dict[str, str]:
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    return (
        dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), OMP_NUM_THREADS="1")
        | LOOPBACK
    )


def run_cli(name: str, args: list[str], env: dict[str, str], nodes: int, cluster=None) -> Run:
    out = WORK / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()[0]
    with TreeSampler() as sampler:
        started = time.perf_counter()
        driver = subprocess.Popen(
            [sys.executable, "-m", "medplug.cli.main", *args, "--out", str(out), "--no-progress"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        sampler.driver_pid = driver.pid
        if driver.wait() != 0:
            raise RuntimeError(f"{name}: medplug batch failed (exit {driver.returncode})")
        wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    if cluster is not None:
        time.sleep(2)  # one more state dump of every raylet after the run
    spilled = spilled_bytes(cluster) if cluster is not None else None
    print(f"{name}: {wall:.1f} s, {len(records)} records, spilled {spilled}", flush=True)
    return Run(name, nodes, wall, records, sampler.sampled, spilled, load_before,
               os.getloadavg()[0])  # fmt: skip


def spilled_bytes(cluster) -> int:
    """Bytes the object stores spilled over the run, from every raylet's own accounting.

    Ray's memory summary (``ray memory``) needs grpcio, which ``ray[data]`` does not
    bring; the raylets log the same counters in their periodic state dump
    (``num bytes currently spilled``, ``cumulative spill requests``) and a
    ``Spilled N MiB`` line whenever they spill. Any spill request counts as 1 byte at
    least, so 0 means nothing was spilled at all.
    """
    import re

    logs = Path(cluster.head_node.get_session_dir_path()) / "logs"
    spilled = 0
    for log in logs.glob("raylet*.out"):
        text = log.read_text(errors="replace")
        for mib in re.findall(r"Spilled (\d+) MiB", text):
            spilled = max(spilled, int(mib) << 20)
        for count in re.findall(r"cumulative spill requests: (\d+)", text):
            spilled = max(spilled, int(count))
        for count in re.findall(r"num bytes currently spilled: (\d+)", text):
            spilled = max(spilled, int(count))
    return spilled


def ray_cluster(site: Path, cpus: list[int]):
    """A Ray cluster of ``len(cpus)`` nodes on this machine; its workers see the plugin."""
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update(cli_env(site))
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "_system_config": {"debug_dump_period_milliseconds": 1000},
                "num_cpus": cpus[0],
                "object_store_memory": OBJECT_STORE,
                "include_dashboard": False,
            },
        )
        for count in cpus[1:]:
            cluster.add_node(num_cpus=count, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return cluster


def main() -> None:
    site, model, cohort = setup()
    env = cli_env(site)
    base = ["batch", str(cohort / "cases"), "--plugin", "mean-intensity", "--model", str(model),
            "--batch-size", str(BATCH_SIZE)]  # fmt: skip
    runs = [run_cli("local", base + ["--engine", "local", "--workers", "2"], env, 1)]
    for name, cpus in (("ray, one node", [3]), ("ray, two nodes", [2, 1])):
        cluster = ray_cluster(site, cpus)
        try:
            time.sleep(2)  # let the cluster's start-up settle before timing
            args = base + ["--engine", "ray", "--ray-address", cluster.address]
            runs.append(run_cli(name, args, env, len(cpus), cluster))
        finally:
            cluster.shutdown()
    write_results(runs)


def stage_means(records: list[dict]) -> dict[str, float]:
    keys = ("load_s", "predict_s", "write_s")
    return {k: sum(r["timing"][k] for r in records) / max(len(records), 1) for k in keys}


def write_results(runs: list[Run]) -> None:
    local = runs[0]
    lines = [
        "# Scale-out benchmark: `medplug batch --engine local` vs `--engine ray`",
        "",
        f"Machine: {platform.machine()}, {psutil.cpu_count()} CPU cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python "
        f"{platform.python_version()}, Ray {_ray_version()}; shared with other jobs while "
        "this ran (load averages below), so compare runs of the same table only.",
        "",
        f"{N_STUDIES} generated CT studies (64x64x32, some compressed), the mean-intensity "
        "test plugin (no model time: the engines' own overhead, Ray's worst case), "
        f"`--batch-size {BATCH_SIZE}`, SR + heatmap SC + FHIR per study. Same logical CPU "
        "slots in every run: one inference process and two decode/write processes "
        "(local: the main process + `--workers 2`; Ray: one node of 3 CPUs, or two "
        "simulated nodes of 2 + 1 CPUs on the same cores, 1 inference actor, tasks of 1 "
        "CPU, 200 MB object store per node). Ray clusters were started before their run "
        "and not timed; wall time is the whole CLI process (imports, plugin loading, Ray "
        "workers' imports included).",
        "",
        "| engine | nodes | wall (s) | studies/min | vs local | CPU-s/study | "
        "object-store spill (bytes) | load avg before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        spill = "-" if run.spilled_bytes is None else f"{run.spilled_bytes:,}"
        n = len(run.records)
        lines.append(
            f"| {run.name} | {run.nodes} | {run.wall_s:.1f} | {60 * n / run.wall_s:.0f} | "
            f"{run.wall_s / local.wall_s:.2f}x | {run.cpu_s / max(n, 1):.3f} | {spill} | "
            f"{run.load_before:.1f} / {run.load_after:.1f} |"
        )
    ok = {run.name: sum(r["status"] == "ok" for r in run.records) for run in runs}
    lines += [
        "",
        "Every run wrote "
        + ", ".join(f"{name}: {count} ok" for name, count in ok.items())
        + " records. Targets: ray on one machine within 1.25x of the local time; two "
        "simulated nodes no slower than one.",
        "",
        "## Per-stage seconds per study (means of `results.jsonl` timing)",
        "",
        "| engine | decode (`load_s`) | inference (`predict_s`) | write SR/SC/FHIR (`write_s`) |",
        "|---|---:|---:|---:|",
    ]
    for run in runs:
        means = stage_means(run.records)
        lines.append(
            f"| {run.name} | {means['load_s']:.4f} | {means['predict_s']:.4f} | "
            f"{means['write_s']:.4f} |"
        )
    lines += [
        "",
        "## Peak RSS per process (MiB)",
        "",
        "| engine | role | processes | peak RSS of the largest | sum of peaks |",
        "|---|---|---:|---:|---:|",
    ]
    for run in runs:
        by_role: dict[str, list[int]] = defaultdict(list)
        for pid, role in run.sampled.role.items():
            by_role[role].append(run.sampled.peak_rss.get(pid, 0))
        for role, peaks in sorted(by_role.items()):
            lines.append(
                f"| {run.name} | {role} | {len(peaks)} | {max(peaks) / 2**20:.0f} | "
                f"{sum(peaks) / 2**20:.0f} |"
            )
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    main()
