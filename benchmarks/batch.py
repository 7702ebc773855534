"""Benchmark: ``medplug batch`` vs a naive per-study loop, and peak memory vs batch size.

200 generated studies end to end, twice: the sample cohort's small studies
(64x64x32) and CT-sized ones (256x256x64, same field of view). Both pipelines
run as their own processes one after the other in the same run, so start-up,
imports and plugin loading count on both sides. The naive loop is what a first
script looks like: for each study, MONAI ``LoadImage`` on the folder, the report
and clinical fields from the manifest, ``plugin.predict`` on one case per
plugin, ``json.dump``.
``medplug batch`` does header-only discovery, decoding in worker processes,
``predict_batch``, the JSONL/CSV, a DICOM SR and Grad-CAM SCs per study, and
its journal. Both use the same plugins and model folders. Peak RSS (process
plus children) is sampled for runs of 50 and 200 studies.

Plugins: the built-in ``image-classifier``, ``report-classifier`` and
``fusion`` (whose image and report embeddings go through the other two) when
they are installed; demo models are taken from ``$MEDPLUG_MODELS`` or trained
once into ``benchmarks/work/models`` the way ``make demo-models`` does. If
they are not installed, the small test plugin from ``tests/batch_support.py``
stands in and the results table says so.

    python benchmarks/batch.py                # the benchmark (make bench-batch)
    python benchmarks/batch.py naive ...      # one naive run (called by the benchmark)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "batch.md"
# The small test plugin instead of the built-in ones (``BENCH_BATCH_PLUGINS=test``): shows
# medplug's own overhead (discovery, decoding, SR writing, journal) with no model time.
TEST_PLUGIN_ONLY = os.environ.get("BENCH_BATCH_PLUGINS") == "test"
TEST_PLUGIN_RESULTS = ROOT / "benchmarks" / "results" / "batch-test-plugin.md"
WORK = ROOT / "benchmarks" / "work"
# Studies in the side-by-side speed comparison (200 per the issue; fewer when the shared
# machine is too loaded to run the naive loop over 200 in reasonable time).
N_STUDIES = int(os.environ.get("BENCH_BATCH_STUDIES", "200"))
RSS_SIZES = (50, 200)  # `medplug batch` runs whose peak RSS must stay flat
WORKERS = 2
BATCH_SIZE = 16
REAL_PLUGINS = ("image-classifier", "report-classifier", "fusion")


@dataclass
class PluginSetup:
    """Which plugins both pipelines run, with which model folders, in which environment."""

    names: list[str]
    models: list[Path]
    env: dict[str, str]
    note: str


def choose_plugins(work: Path) -> PluginSetup:
    from medplug.registry import discover

    installed = {entry.name for entry in discover() if entry.ok}
    real = [name for name in REAL_PLUGINS if name in installed and not TEST_PLUGIN_ONLY]
    if "image-classifier" in real:
        models = demo_models(real)
        return PluginSetup(real, [models / name for name in real], dict(os.environ),
                           ", ".join(f"`{name}`" for name in real) + " (demo models)")  # fmt: skip
    sys.path.insert(0, str(ROOT / "tests"))
    from batch_support import env_with, install_intensity_plugin, intensity_model

    site = install_intensity_plugin(work / "plugin")
    sys.path.insert(0, str(site))
    model = intensity_model(work / "model", centre=-800.0, scale=20.0)
    note = (
        "mean-intensity test plugin (no model time: medplug's own overhead)"
        if TEST_PLUGIN_ONLY
        else "mean-intensity test plugin (the built-in plugins were not installed when this ran)"
    )
    return PluginSetup(["mean-intensity"], [model], env_with(site), note)


def demo_models(names: list[str]) -> Path:
    """A folder with a demo model per plugin: ``$MEDPLUG_MODELS`` if complete, else trained."""
    given = os.environ.get("MEDPLUG_MODELS")
    if given and all((Path(given) / name / "medplug.json").is_file() for name in names):
        return Path(given)
    models = WORK / "models"
    if not all((models / name / "medplug.json").is_file() for name in names):
        from medplug.sampledata import generate_cohort

        cohort = WORK / "train_cohort"
        if not (cohort / "manifest.csv").is_file():
            generate_cohort(cohort, n_cases=24, seed=0)
        print("training demo models (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "medplug.cli.demo", "train", "--cohort", str(cohort),
                        "--models", str(models)], check=True)  # fmt: skip
    return models


# --------------------------------------------------------------------------- the naive loop


def naive_loop(
    cohort: Path, names: list[str], models: list[Path], out: Path, n: int, with_sr: bool = False
) -> None:
    """Per study: MONAI LoadImage on the folder, each plugin's predict on one case, JSON.

    ``with_sr``: also the DICOM outputs ``medplug batch`` writes (one SR citing the
    series, one Grad-CAM SC per heatmap), built by the same functions, one study at a time.
    """
    from monai.transforms import LoadImage

    from medplug.batch.manifest import Manifest
    from medplug.contract import Case, ImageVolume
    from medplug.ingest import MedplugDicomReader
    from medplug.registry import load_plugin

    plugins = [load_plugin(name, model) for name, model in zip(names, models, strict=True)]
    manifest = Manifest.read(cohort / "manifest.csv")
    rows = _manifest_rows(cohort)[:n]
    loader = LoadImage(reader=MedplugDicomReader(), image_only=True)
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        image = loader(str(cohort / row["dicom_dir"]))
        volume = ImageVolume(array=image.numpy(), affine=image.affine.numpy(), modality="CT")
        found = manifest.lookup(row["study_uid"], row["accession"])
        case = Case(row["case_id"], images=[volume], report=found.report, clinical=found.clinical)
        predictions = [plugin.predict(case) for plugin in plugins]
        if with_sr:
            write_sr_and_sc(cohort / row["dicom_dir"], volume.array, predictions, out)
        results = [prediction.to_json() for prediction in predictions]
        for result in results:
            result.pop("embedding", None)
            (result.get("explanation") or {}).pop("heatmap", None)
        (out / f"{row['case_id']}.json").write_text(json.dumps(results, default=str))


def write_sr_and_sc(folder: Path, image, predictions: list, out: Path) -> None:
    """The naive way to the same DICOM outputs: read every header, build, write."""
    import pydicom
    from pydicom.uid import generate_uid

    from medplug.dicom_out.heatmap_sc import build_heatmap_sc, peak_slice
    from medplug.dicom_out.sr import build_sr

    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.iterdir())]
    headers.sort(key=lambda header: float(header.ImagePositionPatient[2]))
    evidence = [
        headers[len(headers) // 2],
        *headers[: len(headers) // 2],
        *headers[len(headers) // 2 + 1 :],
    ]
    study = str(evidence[0].StudyInstanceUID)[-12:]
    build_sr(predictions, evidence).save_as(out / f"{study}_sr.dcm", enforce_file_format=True)
    for prediction in predictions:
        heatmap = prediction.explanation.heatmap if prediction.explanation else None
        if heatmap is not None:
            slices = peak_slice(image, heatmap)
            sc = build_heatmap_sc(*slices, evidence[0], generate_uid(), generate_uid())
            sc.save_as(out / f"{study}_{prediction.plugin}_sc.dcm", enforce_file_format=True)


def _manifest_rows(cohort: Path) -> list[dict[str, str]]:
    import csv

    with (cohort / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system of the process and all its descendants
    peak_rss_mib: float


def measure(command: list[str], env: dict[str, str]) -> Measured:
    """Wall time, CPU time and peak RSS (process plus children) of one command.

    CPU time hardly depends on what else the machine runs, wall time does: on
    a shared box the CPU ratio says whether a wall-time ratio is load noise.
    The root process's CPU comes from ``getrusage`` once it is reaped; its
    descendants are sampled every 0.1 s, because worker processes forked from a
    fork server are reaped by that server, and ``getrusage`` never sees them.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    handle = psutil.Process(process.pid)
    peak = 0
    descendants_cpu: dict[int, float] = {}
    while process.poll() is None:
        try:
            tree = [handle, *handle.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            for child in tree[1:]:
                times = child.cpu_times()
                descendants_cpu[child.pid] = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed with exit code {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, cpu + sum(descendants_cpu.values()), peak / 2**20)


def naive_command(
    setup: PluginSetup, cohort: Path, out: Path, n: int, with_sr: bool = False
) -> list[str]:
    return [sys.executable, __file__, "naive", "--cohort", str(cohort), "--out", str(out),
            "--n", str(n), "--plugins", *setup.names, "--models",
            *map(str, setup.models)] + (["--with-sr"] if with_sr else [])  # fmt: skip


def batch_command(setup: PluginSetup, source: Path, manifest: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "medplug.cli.main", "batch", str(source), "--out", str(out),
               "--manifest", str(manifest), "--workers", str(WORKERS),
               "--batch-size", str(BATCH_SIZE), "--no-progress"]  # fmt: skip
    for name, model in zip(setup.names, setup.models, strict=True):
        command += ["--plugin", name, "--model", str(model)]
    return command


def subset(cohort: Path, n: int, target: Path) -> Path:
    """A source folder with the first ``n`` studies' DICOM files (copied: scans skip symlinks)."""
    for row in _manifest_rows(cohort)[:n]:
        shutil.copytree(cohort / row["dicom_dir"], target / row["case_id"])
    return target


@dataclass(frozen=True)
class Workload:
    """A kind of study the two pipelines are compared on."""

    tag: str
    title: str
    shape: tuple[int, int, int]  # columns, rows, slices
    pixel_spacing_mm: float
    slice_spacing_mm: float

    @property
    def size(self) -> str:
        return "x".join(map(str, self.shape))


# The sample cohort's small studies (start-up weighs most), and studies sized like a
# thin-slab CT (256x256x64, same field of view), where per-study work weighs most.
WORKLOADS = (
    Workload("sample", "sample-cohort studies", (64, 64, 32), 0.75, 2.5),
    Workload("ct", "CT-sized studies", (256, 256, 64), 0.1875, 1.25),
)


def cohort_for_benchmark(workload: Workload) -> Path:
    from medplug.sampledata import generate_cohort

    size = max(N_STUDIES, *RSS_SIZES)
    suffix = "" if workload.tag == "sample" else f"-{workload.tag}"
    cohort = WORK / f"cohort{size}{suffix}"
    if not (cohort / "manifest.csv").is_file():
        print(f"generating {size} {workload.title} ({workload.size}) ...", flush=True)
        shutil.rmtree(cohort, ignore_errors=True)
        generate_cohort(cohort, n_cases=size, seed=0, shape=workload.shape,
                        pixel_spacing_mm=workload.pixel_spacing_mm,
                        slice_spacing_mm=workload.slice_spacing_mm)  # fmt: skip
    return cohort


HEADER = (
    "| pipeline | what it does per study | wall time (s) | studies/min | speed-up "
    "| CPU time (s) | CPU ratio | peak RSS (MiB) |\n|---|---|---:|---:|---:|---:|---:|---:|"
)


def row(name: str, steps: str, run: Measured, n: int, base: Measured, n_base: int) -> str:
    """One table row; ratios are against ``base`` (the naive loop), per study."""
    rate, base_rate = n / run.wall_s * 60, n_base / base.wall_s * 60
    cpu_ratio = (base.cpu_s / n_base) / (run.cpu_s / n)
    return (
        f"| {name} | {steps} | {run.wall_s:.1f} | {rate:.1f} | **{rate / base_rate:.2f}x** "
        f"| {run.cpu_s:.0f} | {cpu_ratio:.2f}x | {run.peak_rss_mib:.0f} |"
    )


BATCH_STEPS = (
    "header scan, decode in 2 worker processes, `predict_batch` "
    f"({BATCH_SIZE} studies), JSONL+CSV, SR + Grad-CAM SC per plugin, SQLite journal"
)
NAIVE_STEPS = "MONAI `LoadImage` + `predict` one case per plugin + JSON"
NAIVE_SR_STEPS = NAIVE_STEPS + " + the same SR and Grad-CAM SC (`build_sr`, `build_heatmap_sc`)"


def like_for_like_ratio(batch: Measured, n: int, with_sr: Measured | None, n_base: int) -> str:
    """``medplug batch`` against the naive loop that writes the same outputs."""
    if with_sr is None:
        return ""
    speed = (n / batch.wall_s) / (n_base / with_sr.wall_s)
    cpu = (with_sr.cpu_s / n_base) / (batch.cpu_s / n)
    return (
        f"\nLike for like (both write the JSON, an SR and a Grad-CAM SC per study): "
        f"`medplug batch` runs **{speed:.2f}x** the studies/min of the naive loop, "
        f"with {cpu:.2f}x less CPU per study.\n"
    )


@dataclass
class WorkloadResult:
    workload: Workload
    naive: Measured
    with_sr: Measured | None
    runs: dict[int, Measured]  # medplug batch, by number of studies
    records: list[dict]
    n_sr: int
    n_sc: int
    n_naive: int
    n_naive_sr: int


def run_workload(setup: PluginSetup, workload: Workload, work: Path) -> WorkloadResult:
    """Both pipelines on one workload, one after the other."""
    cohort = cohort_for_benchmark(workload)
    manifest = cohort / "manifest.csv"
    work = work / workload.tag
    print(f"[{workload.title}] naive loop ...", flush=True)
    naive = measure(naive_command(setup, cohort, work / "naive", N_STUDIES), setup.env)
    with_sr = None
    if not TEST_PLUGIN_ONLY:  # the test plugin has no heatmaps: nothing to compare
        print(f"[{workload.title}] naive loop writing the same SR and SCs ...", flush=True)
        command = naive_command(setup, cohort, work / "naive_sr", N_STUDIES, with_sr=True)
        with_sr = measure(command, setup.env)
    print(f"[{workload.title}] medplug batch ...", flush=True)
    runs: dict[int, Measured] = {}
    for n in (N_STUDIES, *(n for n in RSS_SIZES if n != N_STUDIES)):
        source = subset(cohort, n, work / f"source{n}")
        runs[n] = measure(batch_command(setup, source, manifest, work / f"out{n}"), setup.env)
        shutil.rmtree(source)
    out = work / f"out{N_STUDIES}"
    return WorkloadResult(
        workload=workload,
        naive=naive,
        with_sr=with_sr,
        runs=runs,
        records=[json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()],
        n_sr=len(list((out / "sr").glob("*.dcm"))),
        n_sc=len(list((out / "sc").glob("*.dcm"))),
        n_naive=len(list((work / "naive").glob("*.json"))),
        n_naive_sr=len(list((work / "naive_sr").glob("*_sr.dcm"))),
    )


def workload_section(result: WorkloadResult) -> str:
    naive, with_sr, batch = result.naive, result.with_sr, result.runs[N_STUDIES]
    n_naive, n = result.n_naive, len(result.records)
    ok = sum(r["status"] == "ok" for r in result.records)
    like_for_like = (
        f"{row('naive loop + SR and SC', NAIVE_SR_STEPS, with_sr, n_naive, naive, n_naive)}\n"
        if with_sr
        else ""
    )
    rss_rows = "\n".join(
        f"| {k} | {result.runs[k].wall_s:.1f} | {result.runs[k].peak_rss_mib:.0f} |"
        for k in sorted(result.runs)
    )
    return f"""## {result.workload.title}: {N_STUDIES} studies of {result.workload.size} voxels

{HEADER}
{row("naive loop", NAIVE_STEPS, naive, n_naive, naive, n_naive)}
{like_for_like}{row("`medplug batch`", BATCH_STEPS, batch, n, naive, n_naive)}
{like_for_like_ratio(batch, n, with_sr, n_naive)}
`medplug batch` wrote {n} JSON lines ({ok} ok), {result.n_sr} SRs and {result.n_sc} secondary
captures; the naive loop wrote {n_naive} JSON files, and {result.n_naive_sr} SRs in its
like-for-like run.

| studies in the `medplug batch` run | wall time (s) | peak RSS, process + workers (MiB) |
|---:|---:|---:|
{rss_rows}
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        setup = choose_plugins(work)
        load_start = os.getloadavg()[0]
        print(f"plugins: {', '.join(setup.names)}", flush=True)
        results = [run_workload(setup, workload, work) for workload in WORKLOADS]
        load_end = os.getloadavg()[0]

    sections = "\n".join(workload_section(result) for result in results)
    table = f"""# Batch benchmark

Machine: {platform.machine()}, {psutil.cpu_count()} CPU cores, \
{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}; \
load average {load_start:.1f} at the start, {load_end:.1f} at the end. Both pipelines ran \
one after the other in the same run, so the ratios are the figures to read.

Plugins (same model folders on both sides): **{setup.note}**.
Generated CT studies (some compressed) with the manifest's report and clinical fields;
the same field of view at two sizes. Wall time is the whole process, start-up,
imports and plugin loading included, on both sides.

Speed-up is the studies/min ratio; CPU time is user + system of the whole process tree
(the root process from `getrusage`, its descendants, fork-server workers included, sampled
every 0.1 s); CPU ratio = naive's CPU seconds per study / this pipeline's.

{sections}"""
    out = TEST_PLUGIN_RESULTS if TEST_PLUGIN_ONLY else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive", help="run the naive loop once")
    naive.add_argument("--cohort", type=Path, required=True)
    naive.add_argument("--out", type=Path, required=True)
    naive.add_argument("--n", type=int, required=True)
    naive.add_argument("--plugins", nargs="+", required=True)
    naive.add_argument("--models", nargs="+", type=Path, required=True)
    naive.add_argument("--with-sr", action="store_true", help="also write the SR and SCs")
    args = parser.parse_args()
    if args.command == "naive":
        naive_loop(args.cohort, args.plugins, args.models, args.out, args.n, args.with_sr)
    else:
        main()


if __name__ == "__main__":
    cli()
