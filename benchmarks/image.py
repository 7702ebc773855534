"""Image plugin benchmark: PneumoniaMNIST and BreastMNIST, several seeds, next to MedMNIST v2.

Train on the official train split, select the epoch and fit calibration on val,
report on test: AUC with bootstrap 95% CI, accuracy at the operating point
chosen on val, ECE and Brier before and after temperature scaling, training
time per run, and inference throughput through the plugin (batched and single).
Writes ``benchmarks/results/image.md``. Usage: ``python benchmarks/image.py
[--seeds 0 1 2] [--datasets pneumoniamnist breastmnist] [--epochs N]``.
"""

# ruff: noqa: E501  (Markdown table rows read better unbroken)

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from medplug.calibration import softmax_with_temperature
from medplug.contract import Case
from medplug.evaluation import binary_metrics, expected_calibration_error
from medplug_image.config import ImageModelConfig
from medplug_image.datasets import read_npz
from medplug_image.fit import fit_model_folder
from medplug_image.loop import predict_logits, to_tensors
from medplug_image.plugin import ImageClassifierPlugin

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "plugins" / "medplug_image" / "configs"
WORK = REPO / "benchmarks" / "work" / "image"
RESULTS = REPO / "benchmarks" / "results" / "image.md"
PUBLISHED = {  # MedMNIST v2 (Yang et al., Sci Data 2023), from the shared data README
    "pneumoniamnist": [
        ("ResNet-18 (28)", 0.944, 0.854),
        ("ResNet-50 (224)", 0.962, 0.884),
        ("Google AutoML Vision", 0.991, 0.946),
    ],
    "breastmnist": [("ResNet-18 (28)", 0.901, 0.863), ("Google AutoML Vision", 0.919, 0.861)],
}
TARGETS = {"pneumoniamnist": 0.975, "breastmnist": 0.92}
BUDGET_S = 15 * 60  # training time allowed per run (issue #3), on 2 CPU cores


def shared_data() -> Path:
    candidates = [
        os.environ.get("MEDPLUG_SHARED_DATA"),
        REPO.parent / "shared" / "data",
        Path("/work/shared/data"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "medmnist").is_dir():
            return Path(candidate)
    raise SystemExit("shared data not found; set MEDPLUG_SHARED_DATA")


def run_seed(npz: Path, dataset: str, seed: int, epochs: int | None) -> dict:
    config = ImageModelConfig.from_file(CONFIGS / f"{dataset}.json")
    config.seed = seed
    if epochs:
        config.epochs = epochs
    folder, result, _ = fit_model_folder(
        npz,
        WORK / f"{dataset}-seed{seed}",
        config,
        on_epoch=lambda r: print(
            f"  {dataset} seed {seed} epoch {r['epoch']}: "
            f"loss {r['loss']:.4f} val AUC {r['val_auc']:.4f}",
            flush=True,
        ),
    )
    plugin = ImageClassifierPlugin.from_pretrained(folder, explain=False)
    test = read_npz(npz, "test", config)
    test_x, _ = to_tensors(test, config)
    logits = predict_logits(plugin.model, test_x, tta_flips=config.tta_flips)
    raw = softmax_with_temperature(logits, 1.0)[:, 1]
    calibrated = plugin.calibration.probabilities(logits)[:, 1]
    metrics = binary_metrics(test.labels, calibrated, plugin.calibration.threshold)
    return {
        "seed": seed,
        "folder": folder,
        "labels": test.labels,
        "calibrated": calibrated,
        "auc": metrics["auc"],
        "auc_ci95": metrics["auc_ci95"],
        "accuracy": metrics["accuracy"],
        "ece_before": expected_calibration_error(test.labels, raw),
        "ece_after": metrics["ece"],
        "brier_before": float(np.mean((raw - test.labels) ** 2)),
        "brier_after": metrics["brier"],
        "val_auc": result.best_val_auc,
        "best_epochs": result.best_epochs,
        "members": config.ensemble,
        "train_s": result.seconds,
        "temperature": plugin.calibration.temperature,
        "threshold": plugin.calibration.threshold,
    }


def throughput(folder: Path, npz: Path, n_batch: int = 256, n_single: int = 32) -> dict:
    """Images/s through the plugin's predict path (preprocessing included)."""
    out = {}
    for explain in (False, True):
        plugin = ImageClassifierPlugin.from_pretrained(folder, explain=explain)
        test = read_npz(npz, "test", plugin.config)
        cases = [
            Case(case_id=c, images=[v]) for c, v in zip(test.case_ids, test.volumes, strict=True)
        ]
        plugin.predict_batch(cases[:8])  # warm-up
        started = time.perf_counter()
        plugin.predict_batch(cases[:n_batch])
        out[("batch", explain)] = n_batch / (time.perf_counter() - started)
        started = time.perf_counter()
        for case in cases[:n_single]:
            plugin.predict(case)
        out[("single", explain)] = n_single / (time.perf_counter() - started)
    return out


def epochs_note(run: dict) -> str:
    """The kept epoch of each member, e.g. "best epoch 12" or "best epochs 12/9/14"."""
    epochs = "/".join(str(epoch) for epoch in run["best_epochs"])
    return f"best epoch{'s' if run['members'] > 1 else ''} {epochs}"


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the configs (smoke runs)"
    )
    args = parser.parse_args()
    data = shared_data() / "medmnist"
    load_before = os.getloadavg()[0]
    lines = [
        "# Image plugin benchmark (MedMNIST v2, official splits)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} logical cores, "
        f"torch {torch.__version__}, training with torch.set_num_threads(num_threads from the config). "
        f"Load average at start {load_before:.1f} (the machine was shared with other jobs, so "
        "wall-clock times are pessimistic).",
        "",
        "Train on train, epoch selection, temperature and operating point on val, figures on test. "
        "Configs: `plugins/medplug_image/configs/<dataset>.json`. `± ` is the SD over seeds; "
        "the averaged row averages the runs' calibrated probabilities. A run of a config with "
        "`ensemble` > 1 trains that many networks (seeds seed + 1000·i) into one model folder.",
        "",
    ]
    for dataset in args.datasets:
        npz = data / f"{dataset}.npz"
        runs = [run_seed(npz, dataset, seed, args.epochs) for seed in args.seeds]
        ensemble_probs = np.mean([r["calibrated"] for r in runs], axis=0)
        threshold = float(np.mean([r["threshold"] for r in runs]))
        ensemble = binary_metrics(runs[0]["labels"], ensemble_probs, threshold)
        speed = throughput(runs[0]["folder"], npz)
        lines += [
            f"## {dataset}",
            "",
            "| method | test AUC (95% CI) | test ACC | ECE before → after T | Brier before → after T"
            " | val AUC | train time / run |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            lines.append(
                f"| medplug seed {r['seed']} ({epochs_note(r)}, T={r['temperature']:.2f}) "
                f"| {r['auc']:.3f} ({r['auc_ci95'][0]:.3f}–{r['auc_ci95'][1]:.3f}) "
                f"| {r['accuracy']:.3f} | {r['ece_before']:.3f} → {r['ece_after']:.3f} "
                f"| {r['brier_before']:.3f} → {r['brier_after']:.3f} | {r['val_auc']:.3f} "
                f"| {r['train_s']:.0f} s |"
            )
        lines.append(
            f"| **medplug, mean ± SD of {len(runs)} seeds** | **{mean_sd([r['auc'] for r in runs])}** "
            f"| {mean_sd([r['accuracy'] for r in runs])} "
            f"| {mean_sd([r['ece_before'] for r in runs])} → {mean_sd([r['ece_after'] for r in runs])} "
            f"| {mean_sd([r['brier_before'] for r in runs])} → {mean_sd([r['brier_after'] for r in runs])} "
            f"| {mean_sd([r['val_auc'] for r in runs])} | {mean_sd([r['train_s'] for r in runs])} s |"
        )
        members = runs[0]["members"]
        cross_seconds = sum(r["train_s"] for r in runs)
        lines.append(
            f"| medplug, the {len(runs)} runs above averaged ({len(runs) * members} networks, "
            f"{cross_seconds:.0f} s training in all) | {ensemble['auc']:.3f} "
            f"({ensemble['auc_ci95'][0]:.3f}–{ensemble['auc_ci95'][1]:.3f}) | {ensemble['accuracy']:.3f} "
            f"| – → {ensemble['ece']:.3f} | – → {ensemble['brier']:.3f} | – | – |"
        )
        for method, auc, acc in PUBLISHED[dataset]:
            lines.append(
                f"| MedMNIST v2: {method} (published) | {auc:.3f} | {acc:.3f} | – | – | – | – |"
            )
        mean_auc = statistics.mean(r["auc"] for r in runs)
        longest = max(r["train_s"] for r in runs)
        met = "met" if mean_auc >= TARGETS[dataset] else "NOT met"
        one_model = (
            f"one model = a {members}-member seed ensemble in one model folder"
            if members > 1
            else "one model = one network"
        )
        fits = "within" if cross_seconds <= BUDGET_S else "over"
        lines += [
            "",
            f"Target test AUC ≥ {TARGETS[dataset]}: **{met}** by the mean over {len(runs)} runs "
            f"({mean_auc:.3f}; {one_model}; longest run {longest:.0f} s, budget {BUDGET_S} s). "
            f"Averaging the {len(runs)} runs gives {ensemble['auc']:.3f}; their training "
            f"({cross_seconds:.0f} s in all) is {fits} the per-run budget, so that average "
            + ("does not count as one run." if fits == "over" else "would count as one run."),
            "",
            "Inference throughput through `ImageClassifierPlugin` (preprocessing included, model of "
            f"seed {runs[0]['seed']}, default torch threads):",
            "",
            "| path | images/s without Grad-CAM | images/s with Grad-CAM |",
            "|---|---|---|",
            f"| `predict_batch` (256 images, one forward pass) | {speed[('batch', False)]:.0f} "
            f"| {speed[('batch', True)]:.0f} |",
            f"| `predict` one at a time | {speed[('single', False)]:.0f} | {speed[('single', True)]:.0f} |",
            "",
        ]
        RESULTS.write_text("\n".join(lines) + "\n")  # keep partial results if a later run fails
    lines.append(f"Load average at end {os.getloadavg()[0]:.1f}.")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
