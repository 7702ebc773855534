"""Start-up and per-case latency: what a one-case job pays before and after its model runs.

Run with ``make bench-startup`` (it trains the demo models once). Every figure
is the median of ``--runs`` cold processes (fresh interpreter each), measured
side by side in one run, with the load average noted: on a shared machine
compare ratios, not absolute seconds. ``--repo`` points at another checkout
(its own ``.venv``) to measure the code there the same way, e.g. main before
a change; ``--json`` keeps the raw figures.

Sections: ``medplug plugins`` vs ``import torch``; ``import medplug`` vs
``pass``; ``medplug predict`` per built-in plugin split into import / load
weights / ingest / predict (imports counted wherever they happen, from
``-X importtime``); per-case latency at batch 1 and 16, 1 and 2 threads;
the image plugin's forward pass in torch vs ONNX Runtime (batch 1, 2, 4, 16; 1 and 2
threads) and ``medplug predict --no-explain`` on each;
``LoadImage(reader=MedplugDicomReader())`` vs ``load_image``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGINS = ("image-classifier", "report-classifier", "fusion")

# One cold process: each phase of a one-case predict, timed where it happens.
PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
import medplug
from medplug.registry import plugin_class, load_plugin
from medplug.ingest.loading import load_case
name, case_dir, models = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
plugin_class(name)
t1 = time.perf_counter()
plugin = load_plugin(name, models / name)
t2 = time.perf_counter()
report = (case_dir / "report.txt").read_text()
clinical = json.loads((case_dir / "clinical.json").read_text())
if name == "report-classifier":
    case = load_case(None, case_id="c", report=report)
elif name == "image-classifier":
    case = load_case(case_dir / "dicom", case_id="c")
else:
    case = load_case(case_dir / "dicom", case_id="c", report=report, clinical=clinical)
t3 = time.perf_counter()
prediction = plugin.predict(case)
t4 = time.perf_counter()
assert prediction.error is None, prediction.error
print(json.dumps({"start_to_class": t1 - t0, "load": t2 - t1, "ingest": t3 - t2,
                  "predict": t4 - t3}))
"""

LATENCY = r"""
import json, sys, time, statistics
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]))
from medplug.registry import load_plugin
from medplug.ingest.loading import load_case
name, case_dir, models = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
report = (case_dir / "report.txt").read_text()
clinical = json.loads((case_dir / "clinical.json").read_text())
image = None if name == "report-classifier" else case_dir / "dicom"
base = load_case(image, case_id="c", report=report if name != "image-classifier" else None,
                 clinical=clinical if name == "fusion" else None)
plugin = load_plugin(name, models / name)
out = {}
for batch in (1, 16):
    cases = [base] * batch
    plugin.predict_batch(cases)  # warm-up
    times = []
    for _ in range(5 if batch == 1 else 3):
        t = time.perf_counter(); plugin.predict_batch(cases); times.append(time.perf_counter() - t)
    out[str(batch)] = statistics.median(times) / batch * 1000
print(json.dumps(out))
"""

# The image plugin's forward pass, torch vs ONNX Runtime, no explanation (ORT cannot
# run Grad-CAM): ms per case for predict_batch and for the network call alone.
LATENCY_ONNX = r"""
import json, os, sys, time, statistics
from pathlib import Path
os.environ["MEDPLUG_BACKEND"] = sys.argv[3]
from medplug.threads import apply_thread_policy
apply_thread_policy(int(sys.argv[4]))
import torch
from medplug_image.plugin import ImageClassifierPlugin
from medplug.ingest.loading import load_case
case_dir, folder = Path(sys.argv[1]), Path(sys.argv[2])
base = load_case(case_dir / "dicom", case_id="c")
plugin = ImageClassifierPlugin.from_pretrained(folder, explain=False)
out = {}
for batch in (1, 2, 4, 16):
    cases = [base] * batch
    assert plugin.uses_onnx(batch) == (sys.argv[3] == "onnx")
    images = torch.stack([plugin._prepare(c).tensor.as_tensor() for c in cases])
    plugin.predict_batch(cases); plugin._forward(images)  # warm-up
    runs = 7 if batch < 16 else 3
    whole, forward = [], []
    for _ in range(runs):
        t = time.perf_counter(); plugin.predict_batch(cases); whole.append(time.perf_counter() - t)
        t = time.perf_counter(); plugin._forward(images); forward.append(time.perf_counter() - t)
    out[str(batch)] = {"predict": statistics.median(whole) / batch * 1000,
                       "forward": statistics.median(forward) / batch * 1000}
print(json.dumps(out))
"""

ADD_ONNX = r"""
import sys
from medplug_image.onnx_backend import add_onnx_to_folder
add_onnx_to_folder(sys.argv[1])
"""


def onnx_model_folder(python: str, repo: Path, env: dict[str, str], models: str) -> Path:
    """The demo image model with ``model.onnx``: as saved, or a copy with it exported."""
    import shutil

    source = Path(models) / "image-classifier"
    if (source / "model.onnx").is_file():
        return source
    target = HERE / "work/startup/onnx-model/image-classifier"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    cold([python, "-c", ADD_ONNX, str(target)], repo, env)
    return target


READER = r"""
import json, sys, time
from pathlib import Path
from monai.transforms import LoadImage
from medplug.ingest.loading import load_image
from medplug.ingest.monai_reader import MedplugDicomReader
folder = sys.argv[1]
which = sys.argv[2]
load = LoadImage(reader=MedplugDicomReader(), image_only=True)
run = (lambda: load(folder)) if which == "monai" else (lambda: load_image(folder))
run()  # warm caches and imports

def status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
baseline = status_bytes("VmRSS")
kept = run()
peak_extra = status_bytes("VmHWM") - baseline  # output included, as in benchmarks/ingest.py
del kept
times = []
for _ in range(5):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"s": times[len(times) // 2], "peak_extra_bytes": peak_extra}))
"""


def cold(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system of the child) of one fresh process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in ok:
        raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout + "\n" + result.stderr


def median_cold(
    argv: list[str], cwd: Path, runs: int, env=None, ok: tuple[int, ...] = (0,)
) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _ = cold(argv, cwd, env, ok)
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def import_seconds(importtime_stderr: str) -> float:
    """Total import time of a process from ``-X importtime`` (top-level entries only)."""
    total = 0
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                total += int(parts[1])
            except ValueError:
                continue
    return total / 1e6


def _reader_series() -> Path:
    """The ingest benchmark's 512x512x200 series, written once under benchmarks/work."""
    folder = HERE / "work/startup/series"
    if not folder.is_dir():
        sys.path.insert(0, str(HERE))
        from ingest_data import SERIES_SHAPE, _write_series

        _write_series(folder, SERIES_SHAPE, "series", seed=1)
    return folder


def sample_case(cohort: Path) -> Path:
    """The first case folder, with its clinical fields written next to it as JSON."""
    import csv

    with (cohort / "manifest.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    case_dir = cohort / Path(row["dicom_dir"]).parent
    clinical = {k: row[k] for k in ("age", "sex", "smoking", "crp")}
    (case_dir / "clinical.json").write_text(json.dumps(clinical))
    return case_dir


def run(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    python = str(repo / ".venv/bin/python")
    medplug = str(repo / ".venv/bin/medplug")
    env = dict(os.environ, MEDPLUG_MODELS=str(Path(args.models).resolve()))
    env.pop("OMP_NUM_THREADS", None) if args.default_threads else None
    case_dir = sample_case(Path(args.cohort).resolve())
    models = str(Path(args.models).resolve())
    out: dict[str, Any] = {"repo": str(repo), "load_before": os.getloadavg(), "runs": args.runs}
    sections = set(args.sections.split(","))
    if "startup" in sections:
        out["plugins"] = median_cold([medplug, "plugins"], repo, args.runs, env)
        out["import_torch"] = median_cold([python, "-c", "import torch"], repo, args.runs, env)
        out["import_medplug"] = median_cold([python, "-c", "import medplug"], repo, args.runs, env)
        out["pass"] = median_cold([python, "-c", "pass"], repo, args.runs, env)
        unknown = [medplug, "predict", str(case_dir / "dicom"), "--plugin", "nope"]
        out["unknown_plugin"] = median_cold(unknown, repo, args.runs, env, ok=(2,))
    if "predict" in sections:
        out["predict"] = {}
        for name in PLUGINS:
            rows = []
            for _ in range(args.runs):
                started = time.perf_counter()
                _, cpu, text = cold(
                    [python, "-X", "importtime", "-c", PHASES, name, str(case_dir), models],
                    repo,
                    env,
                )
                wall = time.perf_counter() - started
                phases = json.loads(text.strip().splitlines()[0])
                phases.update(wall=wall, cpu=cpu, imports=import_seconds(text))
                rows.append(phases)
            out["predict"][name] = {
                key: statistics.median(row[key] for row in rows) for key in rows[0]
            }
            cli = [medplug, "predict", str(case_dir / "dicom"), "--plugin", name, "--json"]
            if name != "image-classifier":
                cli += ["--report", str(case_dir / "report.txt")]
            if name == "fusion":
                cli += ["--clinical", str(case_dir / "clinical.json")]
            if name == "report-classifier":
                cli = None  # the CLI's predict always reads an image path
            if cli:
                out["predict"][name]["cli_wall"] = median_cold(cli, repo, args.runs, env)["wall_s"]
    if "latency" in sections:
        out["latency"] = {}
        for name in PLUGINS:
            for threads in (1, 2):
                _, _, text = cold(
                    [python, "-c", LATENCY, name, str(case_dir), models, str(threads)], repo, env
                )
                out["latency"][f"{name} torch {threads}t"] = json.loads(
                    text.strip().splitlines()[0]
                )
    if "onnx" in sections:
        folder = onnx_model_folder(python, repo, env, models)
        out["onnx"] = {}
        for threads in (1, 2):
            for backend in ("torch", "onnx"):
                _, _, text = cold(
                    [python, "-c", LATENCY_ONNX, str(case_dir), str(folder), backend, str(threads)],
                    repo,
                    env,
                )
                out["onnx"][f"{backend} {threads}t"] = json.loads(text.strip().splitlines()[0])
        cli = [medplug, "predict", str(case_dir / "dicom"), "--plugin", "image-classifier"]
        cli += ["--model", str(folder), "--json"]
        for label, extra, backend in (
            ("explain, torch", [], "auto"),
            ("no-explain, torch", ["--no-explain"], "torch"),
            ("no-explain, auto (ORT)", ["--no-explain"], "auto"),
        ):
            cli_env = dict(env, MEDPLUG_BACKEND=backend)
            out["onnx"][f"cli {label}"] = median_cold(cli + extra, repo, args.runs, cli_env)
    if "reader" in sections:
        # Both sides alternate, one cold process each per round, so load drifts hit both.
        series = args.series or str(_reader_series())
        rounds: dict[str, list[dict[str, float]]] = {"monai": [], "medplug": []}
        for _ in range(args.runs):
            for which in rounds:
                _, _, text = cold([python, "-c", READER, series, which], repo, env)
                rounds[which].append(json.loads(text.strip().splitlines()[0]))
        out["reader"] = {w: statistics.median(r["s"] for r in rs) for w, rs in rounds.items()}
        out["reader_ratios"] = [m["s"] / d["s"] for m, d in zip(*rounds.values(), strict=True)]
        out["reader_peak_mb"] = {
            w: statistics.median(r["peak_extra_bytes"] for r in rs) / 1e6
            for w, rs in rounds.items()
        }
    out["load_after"] = os.getloadavg()
    return out


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.2f} s"


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """Side-by-side tables, one column per measured checkout (e.g. ``before``, ``after``)."""
    names = list(results)
    head = "| measure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    first = results[names[0]]
    lines = [
        "# Start-up and per-case latency",
        "",
        "Made by `make bench-startup` (`benchmarks/startup.py`): medians of "
        f"{first['runs']} cold processes per figure, checkouts measured one after the other "
        "on the same machine with the same sample case and models. Load average "
        "(1/5/15 min) at start and end of each: "
        + "; ".join(
            f"{n}: {'/'.join(f'{v:.1f}' for v in r['load_before'])} -> "
            f"{'/'.join(f'{v:.1f}' for v in r['load_after'])}"
            for n, r in results.items()
        )
        + ". The machine is shared: compare columns, not absolute seconds.",
        "",
        "## Start-up",
        "",
        head,
    ]

    def row(label: str, getter) -> None:
        cells = []
        for name in names:
            try:
                cells.append(getter(results[name]))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("`medplug plugins` wall", lambda r: _fmt(r["plugins"]["wall_s"]))
    row("`medplug plugins` CPU", lambda r: _fmt(r["plugins"]["cpu_s"]))
    row("`python -c 'import torch'` wall", lambda r: _fmt(r["import_torch"]["wall_s"]))
    row(
        "plugins / import torch (wall; target <= 0.3)",
        lambda r: f"{r['plugins']['wall_s'] / r['import_torch']['wall_s']:.2f}x",
    )
    row(
        "plugins / import torch (CPU)",
        lambda r: f"{r['plugins']['cpu_s'] / r['import_torch']['cpu_s']:.2f}x",
    )
    row("`python -c 'import medplug'` wall", lambda r: _fmt(r["import_medplug"]["wall_s"]))
    row("`python -c pass` wall", lambda r: _fmt(r["pass"]["wall_s"]))
    row(
        "`medplug predict --plugin nope` refused after",
        lambda r: _fmt(r["unknown_plugin"]["wall_s"]),
    )
    lines += [
        "",
        "## One-case predict, cold process",
        "",
        "Phases as the process saw them: start -> plugin class importable (imports),"
        " load weights (`load_plugin`, including any imports it triggers), ingest, predict."
        " *imports* is the process's whole import time from `-X importtime` wherever it"
        " happened; *import share* = imports / wall (target < 50% for image-only and"
        " report-only). `import torch` alone (first table) is a floor for every plugin's"
        " imports, so once the model work is a fraction of a second the share stays"
        " high even as the absolute import time falls.",
        "",
        head,
    ]
    for plugin in PLUGINS:
        for key, label in (
            ("wall", "wall"),
            ("cpu", "CPU"),
            ("imports", "imports (all)"),
            ("start_to_class", "start -> class"),
            ("load", "load weights"),
            ("ingest", "ingest"),
            ("predict", "predict"),
            ("cli_wall", "`medplug predict` CLI wall"),
        ):
            row(f"{plugin}: {label}", lambda r, k=key, p=plugin: _fmt(r["predict"][p][k]))
        row(
            f"{plugin}: import share",
            lambda r, p=plugin: f"{r['predict'][p]['imports'] / r['predict'][p]['wall']:.0%}",
        )
    lines += [
        "",
        "## Per-case latency (model warm), torch",
        "",
        "`predict_batch` of the sample case repeated, full plugin work (preprocessing,"
        " calibration, explanations); median ms per case. The forward passes are the same"
        " torch code in both checkouts, so differences between columns here are mostly the"
        " machine's load at the time; within a column, 1 vs 2 threads shows what the"
        " thread policy decides between.",
        "",
        head,
    ]
    for plugin in PLUGINS:
        for threads in (1, 2):
            for batch in ("1", "16"):
                key = f"{plugin} torch {threads}t"
                row(
                    f"{plugin}, {threads} thread(s), batch {batch}",
                    lambda r, k=key, b=batch: f"{r['latency'][k][b]:.1f} ms",
                )
    lines += [
        "",
        "## Image plugin: torch vs ONNX Runtime (no explanation)",
        "",
        "The demo image model with `model.onnx`, `predict_batch` of the sample case with"
        " `explain=False` (ONNX Runtime cannot run Grad-CAM), `MEDPLUG_BACKEND=torch` vs"
        " `onnx`; median ms per case for the whole plugin call (preprocessing included)"
        " and for the network call alone. `auto` uses ORT for single cases only.",
        "",
        head,
    ]
    for threads in (1, 2):
        for batch in ("1", "2", "4", "16"):
            for part in ("forward", "predict"):
                for backend in ("torch", "onnx"):
                    key = f"{backend} {threads}t"
                    row(
                        f"{threads} thread(s), batch {batch}, {part}: {backend}",
                        lambda r, k=key, b=batch, p=part: f"{r['onnx'][k][b][p]:.1f} ms",
                    )
                row(
                    f"{threads} thread(s), batch {batch}, {part}: torch / ORT",
                    lambda r, t=threads, b=batch, p=part: (
                        f"{r['onnx'][f'torch {t}t'][b][p] / r['onnx'][f'onnx {t}t'][b][p]:.1f}x"
                    ),
                )
    for label in ("explain, torch", "no-explain, torch", "no-explain, auto (ORT)"):
        row(
            f"`medplug predict` CLI wall, {label}",
            lambda r, k=f"cli {label}": _fmt(r["onnx"][k]["wall_s"]),
        )
    lines += [
        "",
        "## MONAI reader",
        "",
        "512x512x200 CT series (`benchmarks/ingest_data.py`), warm page cache; each cold"
        " process times 5 loads (median) after a warm-up; the two sides alternate, one"
        " process each per round, `--runs` rounds; figures are medians over rounds. Peak"
        " extra memory: one load after resetting the kernel's peak-RSS mark, output"
        " (210 MB) included. Target LoadImage <= 1.5x load_image.",
        "",
        head,
    ]
    row("`LoadImage(reader=MedplugDicomReader())`", lambda r: _fmt(r["reader"]["monai"]))
    row("`medplug.ingest.load_image`", lambda r: _fmt(r["reader"]["medplug"]))
    row("ratio", lambda r: f"{r['reader']['monai'] / r['reader']['medplug']:.2f}x")
    row(
        "ratio, median of per-round ratios",
        lambda r: f"{statistics.median(r['reader_ratios']):.2f}x",
    )
    for which, label in (("monai", "LoadImage"), ("medplug", "load_image")):
        row(
            f"{label} peak extra memory (output included)",
            lambda r, w=which: f"{r['reader_peak_mb'][w]:.0f} MB",
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=str(ROOT), help="Checkout to measure (its .venv).")
    parser.add_argument("--cohort", default=str(ROOT / "sample_data/cohort"))
    parser.add_argument("--models", default=str(ROOT / "sample_data/models"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sections", default="startup,predict,latency,onnx,reader")
    parser.add_argument("--default-threads", action="store_true",
                        help="Unset OMP_NUM_THREADS (each side's own thread choice).")  # fmt: skip
    parser.add_argument("--json", help="Write the raw figures here.")
    parser.add_argument("--series", help="DICOM series folder for the reader section.")
    parser.add_argument(
        "--markdown",
        nargs="+",
        metavar="NAME=FIGURES.json",
        help="Only write markdown (to --out) from earlier --json files, side by side.",
    )
    parser.add_argument("--out", default=str(HERE / "results/startup.md"))
    args = parser.parse_args()
    if args.markdown:
        results = {}
        for item in args.markdown:
            name, path = item.split("=", 1)
            results[name] = json.loads(Path(path).read_text())
        Path(args.out).write_text(markdown(results))
        print(f"wrote {args.out}")
        return
    figures = run(args)
    text = json.dumps(figures, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
