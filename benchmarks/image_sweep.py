"""Config sweep for the image benchmark: which variant wins on val AUC (test shown, not used).

``run`` trains one variant of a shipped config (JSON overrides) for some seeds
and appends one JSON line per run to ``results/image-sweep.jsonl``, keeping the
val and test logits in ``work/image-sweep``; ``summary`` writes
``results/image-sweep.md``: mean ± SD over seeds and the seeds' averaged
logits. Usage: ``python benchmarks/image_sweep.py run breastmnist long 0 1 2
--set '{"epochs": 80, "patience": 80}'``, then ``python benchmarks/image_sweep.py summary``.
"""

# ruff: noqa: E501  (Markdown table rows read better unbroken)

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np

from medplug_image.config import ImageModelConfig
from medplug_image.datasets import read_npz
from medplug_image.loop import predict_logits, roc_auc, to_tensors, train_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "plugins" / "medplug_image" / "configs"
WORK = REPO / "benchmarks" / "work" / "image-sweep"
LOG = REPO / "benchmarks" / "results" / "image-sweep.jsonl"
SUMMARY = REPO / "benchmarks" / "results" / "image-sweep.md"


def variant(dataset: str, overrides: dict, seed: int) -> ImageModelConfig:
    """The shipped config of ``dataset`` with ``overrides`` (``augment`` is merged)."""
    settings = json.loads((CONFIGS / f"{dataset}.json").read_text())
    for key, value in overrides.items():
        settings[key] = {**settings[key], **value} if key == "augment" else value
    settings["seed"] = seed
    return ImageModelConfig.from_dict(settings)


def logits_path(dataset: str, tag: str, seed: int, split: str) -> Path:
    """Where a run's val or test logits are kept (``work/`` is not committed)."""
    return WORK / f"{dataset}-{tag}-s{seed}-{split}.npy"


def run(dataset: str, tag: str, seeds: list[int], overrides: dict, data: Path) -> None:
    npz = data / f"{dataset}.npz"
    WORK.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        config = variant(dataset, overrides, seed)
        train, val, test = (
            to_tensors(read_npz(npz, s, config), config) for s in ("train", "val", "test")
        )
        result = train_model(config, train, val)
        test_logits = predict_logits(result.model, test[0], tta_flips=config.tta_flips)
        np.save(logits_path(dataset, tag, seed, "val"), result.val_logits)
        np.save(logits_path(dataset, tag, seed, "test"), test_logits)
        record = {
            "dataset": dataset,
            "tag": tag,
            "seed": seed,
            "best_epochs": result.best_epochs,
            "val_auc": result.best_val_auc,
            "test_auc": roc_auc(test[1].numpy(), test_logits),
            "seconds": result.seconds,
            "overrides": overrides,
            "configs_at": _head_commit(),
        }
        print(json.dumps(record), flush=True)
        with LOG.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def summary(data: Path) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in LOG.read_text().splitlines():
        record = json.loads(line)
        groups[(record["dataset"], record["tag"])].append(record)
    lines = [
        "# Image config sweep (val AUC chooses; test shown for the record only)",
        "",
        "One row per variant of the shipped config, seeds listed. `averaged` averages the seeds' "
        "logits (val and test). Written by `benchmarks/image_sweep.py summary` from "
        "`image-sweep.jsonl`.",
        "",
        "| dataset | variant | overrides of the shipped config at | seeds | val AUC | test AUC | averaged val / test | s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    previous = _previous_averaged()
    for (dataset, tag), runs in groups.items():
        labels = {
            s: np.load(data / f"{dataset}.npz")[f"{s}_labels"].ravel() for s in ("val", "test")
        }
        averaged = previous.get((dataset, tag), "–")
        logits_kept = all(
            logits_path(dataset, tag, r["seed"], split).is_file()
            for r in runs
            for split in ("val", "test")
        )
        if len(runs) > 1 and logits_kept:  # logits live in work/, which another machine lacks
            aucs = []
            for split in ("val", "test"):
                logits = [np.load(logits_path(dataset, tag, r["seed"], split)) for r in runs]
                aucs.append(roc_auc(labels[split], np.mean(logits, axis=0)))
            averaged = f"{aucs[0]:.3f} / {aucs[1]:.3f}"
        lines.append(
            f"| {dataset} | {tag} | `{json.dumps(runs[0]['overrides'])}` at {runs[0].get('configs_at', '?')} "
            f"| {' '.join(str(r['seed']) for r in runs)} | {_mean_sd([r['val_auc'] for r in runs])} "
            f"| {_mean_sd([r['test_auc'] for r in runs])} | {averaged} "
            f"| {statistics.mean(r['seconds'] for r in runs):.0f} |"
        )
    SUMMARY.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _previous_averaged() -> dict[tuple[str, str], str]:
    """The averaged column of the summary written before, for groups whose logits are gone."""
    if not SUMMARY.is_file():
        return {}
    found = {}
    for line in SUMMARY.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0] not in ("dataset", "---"):
            found[(cells[0], cells[1])] = cells[6]
    return found


def _head_commit() -> str:
    """The commit whose shipped configs the overrides apply to (uncommitted edits aside)."""
    command = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "summary"])
    parser.add_argument("dataset", nargs="?")
    parser.add_argument("tag", nargs="?")
    parser.add_argument("seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--set", default="{}", help="JSON overrides of the shipped config")
    shared = os.environ.get("MEDPLUG_SHARED_DATA", REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(shared) / "medmnist")
    args = parser.parse_args()
    if args.mode == "run":
        run(args.dataset, args.tag, args.seeds, json.loads(args.set), args.data)
    else:
        summary(args.data)


if __name__ == "__main__":
    main()
