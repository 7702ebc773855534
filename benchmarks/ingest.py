"""Ingest benchmark: medplug against SimpleITK, MONAI, naive pydicom and a raw read.

Run with ``make bench-ingest``. Generates its data once into
``benchmarks/work/ingest`` (see ``ingest_data.py``), runs every tool in a fresh
subprocess (``ingest_tools.py``) so each one's peak extra memory is its own,
checks each tool's slice order and HU against the known phantom, and writes
``benchmarks/results/ingest.md`` (and ``ingest.json``). Tools are measured side
by side in one run, so compare them by their ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest_data import FOLDER_SERIES, FOLDER_SLICES, SERIES_SHAPE, ensure_data  # noqa: E402

SERIES_TOOLS = (
    "raw read",
    "SimpleITK ImageSeriesReader",
    "MONAI LoadImage(PydicomReader)",
    "naive pydicom",
    "medplug load_image",
    "medplug load_series",
    "MONAI LoadImage(MedplugDicomReader)",
)
SCAN_TOOLS = (
    "scan: pydicom header-only pass",
    "scan: SimpleITK per-series listing",
    "scan: medplug scan_folder",
)
SLOW_TOOLS = {"MONAI LoadImage(PydicomReader)": 3, "scan: SimpleITK per-series listing": 0}
TARGETS = {
    "load_vs_simpleitk": 0.5,  # medplug time / SimpleITK time at most
    "speedup_vs_monai": 5.0,  # MONAI time / medplug time at least
    "peak_vs_output": 2.0,  # peak extra memory / output array at most
    "scan_files_per_s": 2500.0,
}
PYDICOM_SCAN_REFERENCE_S = 1.4  # the figure for one pydicom header pass, idle machine
MB = 1e6


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for package in ("pydicom", "SimpleITK", "monai", "numpy", "medplug"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
    }


def run_tool(tool: str, path: Path, repeats: int) -> dict[str, Any]:
    """Run one tool in a fresh interpreter; a crash or timeout is recorded, not raised."""
    print(f"  {tool} ...", flush=True)
    command = [sys.executable, str(HERE / "ingest_tools.py"), tool, str(path), str(repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "skipped": "timed out after 300 s"}
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"tool": tool, "skipped": f"failed: {last_line}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_order(result: dict[str, Any], truth: list[float]) -> tuple[str, str]:
    """Match each output slice to the phantom slice with the same HU sum."""
    sums = result.get("output", {}).get("slice_sums")
    if sums is None:
        return "-", "-"
    if len(sums) != len(truth):
        return f"wrong: {len(sums)} slices, expected {len(truth)}", "-"
    truth_arr = np.array(truth)
    matched = [int(np.argmin(np.abs(truth_arr - s))) for s in sums]
    hu_ok = max(abs(truth_arr[m] - s) for m, s in zip(matched, sums, strict=True)) < 1.0
    hu = "exact" if hu_ok else "differs (rescale?)"
    expected = list(range(len(truth)))
    if matched == expected:
        return "correct", hu
    if matched == expected[::-1]:
        return "reversed (correct if its affine says so)", hu
    misplaced = sum(m != e for m, e in zip(matched, expected, strict=True))
    return f"WRONG ({misplaced}/{len(truth)} slices out of place)", hu


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def series_table(results: list[dict[str, Any]], truth: list[float]) -> list[str]:
    by_tool = {r["tool"]: r for r in results}
    sitk = by_tool.get("SimpleITK ImageSeriesReader", {}).get("median_s")
    monai = by_tool.get("MONAI LoadImage(PydicomReader)", {}).get("median_s")
    lines = [
        "| tool | median s | first call s | time / SimpleITK | MONAI time / tool | "
        "peak extra MB | output MB (dtype) | peak / output | slice order | HU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['tool']} | skipped: {r['skipped']} |" + " |" * 8)
            continue
        out = r["output"]
        median = r["median_s"]
        order, hu = check_order(r, truth)
        is_volume = "slice_sums" in out
        output_mb = f"{out['nbytes'] / MB:.0f} ({out['dtype']})" if is_volume else "-"
        ratio = r["peak_extra_bytes"] / out["nbytes"] if is_volume else None
        lines.append(
            f"| {r['tool']} | {median:.3f} | {r['first_s']:.3f} | "
            f"{_fmt(median / sitk if sitk else None, '.2f')} | "
            f"{_fmt(monai / median if monai else None, '.1f')} | "
            f"{r['peak_extra_bytes'] / MB:.0f} | {output_mb} | {_fmt(ratio, '.2f')} | "
            f"{order} | {hu} |"
        )
    return lines


def scan_table(results: list[dict[str, Any]], n_files: int) -> list[str]:
    lines = [
        "| tool | median s | files/s | series found | files grouped | peak extra MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['tool']} | skipped: {r['skipped']} | | | | |")
            continue
        out = r["output"]
        lines.append(
            f"| {r['tool']} | {r['median_s']:.2f} | {n_files / r['median_s']:.0f} | "
            f"{out.get('series', '-')} | {out.get('files', '-')} | "
            f"{r['peak_extra_bytes'] / MB:.0f} |"
        )
    return lines


def target_lines(series: list[dict[str, Any]], scans: list[dict[str, Any]]) -> list[str]:
    """medplug against the issue's targets, with the margin either way."""
    by_tool = {r["tool"]: r for r in series + scans}
    medplug = by_tool.get("medplug load_image", {})
    if "median_s" not in medplug:
        reason = medplug.get("skipped", "not run")
        return [f"medplug not measured ({reason}); `git merge main` once `medplug.ingest` lands."]
    sitk = by_tool["SimpleITK ImageSeriesReader"]["median_s"]
    monai = by_tool["MONAI LoadImage(PydicomReader)"]["median_s"]
    t = medplug["median_s"]
    peak = medplug["peak_extra_bytes"] / medplug["output"]["nbytes"]
    checks = [
        ("series load time / SimpleITK", t / sitk, TARGETS["load_vs_simpleitk"], "<="),
        ("speed-up over MONAI LoadImage", monai / t, TARGETS["speedup_vs_monai"], ">="),
        ("peak extra memory / output array", peak, TARGETS["peak_vs_output"], "<="),
    ]
    scan = by_tool.get("scan: medplug scan_folder", {})
    if "median_s" in scan:
        rate = FOLDER_SERIES * FOLDER_SLICES / scan["median_s"]
        checks.append(("folder scan files/s", rate, TARGETS["scan_files_per_s"], ">="))
        reference = by_tool.get("scan: pydicom header-only pass", {})
        if "median_s" in reference:
            # Load-independent view: the issue measured the pydicom pass at 1.4 s for
            # 2,000 files on an idle 2-core box, so 2,500 files/s there is 1.75x pydicom.
            goal = TARGETS["scan_files_per_s"] / (2000 / PYDICOM_SCAN_REFERENCE_S)
            speedup = reference["median_s"] / scan["median_s"]
            checks.append(("folder scan speed-up over pydicom pass", speedup, goal, ">="))
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for name, value, goal, op in checks:
        met = value <= goal if op == "<=" else value >= goal
        lines.append(f"| {name} | {value:.2f} | {op} {goal:g} | {'yes' if met else 'NO'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per tool")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "ingest")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest.md")
    parser.add_argument("--note", default="", help="a line to add under the machine line")
    args = parser.parse_args()

    started = time.perf_counter()
    info = machine()
    series_dir, folder_dir, truth = ensure_data(args.work)
    print("series load:", flush=True)
    series = [run_tool(t, series_dir, SLOW_TOOLS.get(t, args.repeats)) for t in SERIES_TOOLS]
    print("folder scan:", flush=True)
    scans = [run_tool(t, folder_dir, SLOW_TOOLS.get(t, min(args.repeats, 3))) for t in SCAN_TOOLS]
    info["load_average_at_end"] = os.getloadavg()
    elapsed = time.perf_counter() - started

    nx, ny, nz = SERIES_SHAPE
    n_files = FOLDER_SERIES * FOLDER_SLICES
    report = [
        "# Ingest benchmark",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs "
        f"({info['usable_cpus']} usable); load average "
        f"{info['load_average_at_start'][0]:.1f} at start, {info['load_average_at_end'][0]:.1f} "
        "at end (shared machine: compare ratios, not seconds). Python "
        f"{info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        "",
        *([args.note, ""] if args.note else []),
        f"## Series load: {nx}x{ny}x{nz} CT, shuffled file names, InstanceNumber permuted",
        "",
        "Median of the timed calls after one warm-up call, each tool in a fresh process. "
        "Peak extra = peak RSS during the warm-up call (kernel high-water mark reset after "
        "imports) minus the RSS before it. "
        "Slice order and HU are checked against the phantom (position is the truth).",
        "",
        *series_table(series, truth),
        "",
        f"## Folder scan: {n_files} files in {FOLDER_SERIES} series, one flat folder",
        "",
        *scan_table(scans, n_files),
        "",
        "## medplug against the targets",
        "",
        *target_lines(series, scans),
        "",
        "The last row scales the files/s target by the pydicom pass measured in the same run "
        f"(the issue measured that pass at {PYDICOM_SCAN_REFERENCE_S} s on an idle 2-core box), "
        "so it holds on a busy machine too.",
        "",
        f"Whole benchmark: {elapsed:.0f} s. Regenerate with `make bench-ingest`.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    raw = {"machine": info, "series": series, "scans": scans, "elapsed_s": elapsed}
    for r in series:  # keep the JSON small
        r.get("output", {}).pop("slice_sums", None)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print("\n".join(report))


if __name__ == "__main__":
    main()
