"""Benchmark: ``medplug batch`` vs a naive per-study loop, and peak memory vs batch size.

200 generated studies end to end. The naive loop is what a first script looks
like: for each study, MONAI ``LoadImage`` on the folder, ``plugin.predict`` on
one case, ``json.dump`` to a file. ``medplug batch`` does discovery, decoding
in worker processes, ``predict_batch``, the JSONL/CSV, a DICOM SR and a
Grad-CAM SC per study, and its journal. Both use the same plugin and model.
Peak RSS (parent + workers) is sampled for runs of 50 and 200 studies.

Plugin: ``image-classifier`` if installed with a model in ``$MEDPLUG_MODELS``;
otherwise the small test plugin from ``tests/batch_support.py`` (and the
results table says so).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "batch.md"
N_STUDIES = int(os.environ.get("BENCH_BATCH_STUDIES", "200"))
WORKERS = 2


def choose_plugin(work: Path) -> tuple[str, Path, dict[str, str], str]:
    """(plugin name, model folder, env for subprocesses, note for the table)."""
    from medplug.registry import default_model_dir, discover

    names = {entry.name for entry in discover() if entry.ok}
    model = default_model_dir("image-classifier")
    if "image-classifier" in names and model.is_dir():
        return "image-classifier", model, dict(os.environ), "image-classifier (demo model)"
    sys.path.insert(0, str(ROOT / "tests"))
    from batch_support import env_with, install_intensity_plugin, intensity_model

    site = install_intensity_plugin(work / "plugin")
    sys.path.insert(0, str(site))
    model = intensity_model(work / "model", centre=-800.0, scale=20.0)
    note = "mean-intensity test plugin (image-classifier not available when this ran)"
    return "mean-intensity", model, env_with(site), note


def naive_loop(cohort: Path, plugin_name: str, model: Path, out: Path, n: int) -> float:
    """Per study: MONAI LoadImage on the folder, predict one case, write JSON."""
    from monai.transforms import LoadImage

    from medplug.contract import Case, ImageVolume
    from medplug.ingest import MedplugDicomReader
    from medplug.registry import load_plugin

    plugin = load_plugin(plugin_name, model)
    loader = LoadImage(reader=MedplugDicomReader(), image_only=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index in range(1, n + 1):
        case_id = f"case{index:04d}"
        image = loader(str(cohort / "cases" / case_id / "dicom"))
        volume = ImageVolume(array=image.numpy(), affine=image.affine.numpy(), modality="CT")
        prediction = plugin.predict(Case(case_id, images=[volume]))
        (out / f"{case_id}.json").write_text(json.dumps(prediction.to_json()))
    return time.perf_counter() - started


def medplug_batch(
    source: Path, plugin: str, model: Path, out: Path, env: dict
) -> tuple[float, float]:
    """Wall time and peak RSS (MiB, parent + worker processes) of one ``medplug batch`` run."""
    command = [sys.executable, "-m", "medplug.cli.main", "batch", str(source), "--plugin", plugin,
               "--model", str(model), "--out", str(out), "--workers", str(WORKERS),
               "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    handle = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [handle, *handle.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if process.returncode != 0:
        raise RuntimeError(f"medplug batch failed with exit code {process.returncode}")
    return time.perf_counter() - started, peak / 2**20


def subset(cohort: Path, n: int, target: Path) -> Path:
    """A source folder with the first ``n`` studies' DICOM files (copied: scans skip symlinks)."""
    import shutil

    for index in range(1, n + 1):
        case_id = f"case{index:04d}"
        shutil.copytree(cohort / "cases" / case_id / "dicom", target / case_id)
    return target


BATCH_STEPS = "header scan, parallel decode, `predict_batch`, JSONL+CSV, SR + Grad-CAM SC, journal"


def row(name: str, steps: str, seconds: float, rate: float, speedup: float) -> str:
    return f"| {name} | {steps} | {seconds:.1f} | {rate:.1f} | {speedup:.2f}x |"


def main() -> None:
    from medplug.sampledata import generate_cohort

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        plugin, model, env, note = choose_plugin(work)
        print(f"generating {N_STUDIES} studies ...", flush=True)
        cohort = generate_cohort(work / "cohort", n_cases=N_STUDIES, seed=0)
        source_all = subset(cohort, N_STUDIES, work / "source_all")
        source_50 = subset(cohort, min(50, N_STUDIES), work / "source_50")

        print("naive loop ...", flush=True)
        naive_s = naive_loop(cohort, plugin, model, work / "naive", N_STUDIES)
        print("medplug batch ...", flush=True)
        batch_s, rss_all = medplug_batch(source_all, plugin, model, work / "out_all", env)
        _, rss_50 = medplug_batch(source_50, plugin, model, work / "out_50", env)
        records = (work / "out_all" / "results.jsonl").read_text().splitlines()
        n_sr = len(list((work / "out_all" / "sr").glob("*.dcm")))

    naive_rate, batch_rate = N_STUDIES / naive_s * 60, N_STUDIES / batch_s * 60
    table = f"""# Batch benchmark

Machine: {platform.machine()}, {psutil.cpu_count()} CPU cores visible (shared with other
jobs while this ran), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python
{platform.python_version()}. `medplug batch` with `--workers {WORKERS}`; both sides measured
in the same run, same plugin and model: **{note}**.
{N_STUDIES} generated CT studies (64x64x32, some compressed), end to end.

| pipeline | what it does per study | wall time (s) | studies/min | speed-up |
|---|---|---:|---:|---:|
{row("naive loop", "MONAI `LoadImage` + `predict` one case + JSON", naive_s, naive_rate, 1.0)}
{row("`medplug batch`", BATCH_STEPS, batch_s, batch_rate, batch_rate / naive_rate)}

`medplug batch` wrote {len(records)} JSON lines and {n_sr} SR files; its wall time
includes process start-up and plugin loading, the naive loop's does not.

| studies in the batch | peak RSS, parent + workers (MiB) |
|---:|---:|
| {min(50, N_STUDIES)} | {rss_50:.0f} |
| {N_STUDIES} | {rss_all:.0f} |
"""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
