"""``medplug evaluate`` for lesion-seg: Dice per case, and lesion detection like every plugin.

Each case goes through ``plugin.predict`` (the real path: preprocessing, the
network, the way back to the input grid), and its mask is compared with the
cohort's ``lesion_mask.nii.gz`` on the input's voxels. Detection (lesion
present or not, scored by P(lesion)) uses ``medplug.evaluation`` so its
figures and plots match the other plugins'.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from medplug.contract import Case
from medplug.evaluation import binary_metrics, write_report

from medplug_lesion_seg import LABELS
from medplug_lesion_seg.cohort import read_cohort

if TYPE_CHECKING:
    from medplug_lesion_seg.plugin import LesionSegPlugin


def case_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; two empty masks agree perfectly (1.0)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    total = int(predicted.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((predicted & truth).sum()) / total


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of a mean over cases."""
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def evaluate_plugin(
    plugin: LesionSegPlugin, data: Path, out_dir: Path, image_column: str = "nifti"
) -> dict[str, Any]:
    """Score ``plugin`` on the cohort at ``data``; ``metrics.json``, ``per_case.csv`` and
    (when both classes occur) ROC and reliability plots go to ``out_dir``."""
    cases = read_cohort(data, image_column)
    rows = []
    for case in cases:
        prediction = plugin.predict(Case(case_id=case.case_id, images=[case.image]))
        assert prediction.segmentation is not None
        predicted = prediction.segmentation.label_map == 1
        rows.append(
            {
                "case_id": case.case_id,
                "lesion": int(case.has_lesion),
                "p_lesion": prediction.probabilities[LABELS[1]],
                "dice": case_dice(predicted, case.mask),
                "true_voxels": int(case.mask.sum()),
                "predicted_voxels": int(predicted.sum()),
                "overlap_voxels": int((predicted & case.mask).sum()),
            }
        )
    lesion = np.array([row["lesion"] for row in rows])
    dice = np.array([row["dice"] for row in rows])
    overlap = sum(row["overlap_voxels"] for row in rows)
    voxels = sum(row["true_voxels"] + row["predicted_voxels"] for row in rows)
    metrics: dict[str, Any] = {
        "n": len(rows),
        "n_lesion": int(lesion.sum()),
        # Dice over the cases that have a lesion: the segmentation figure.
        "dice_lesion_cases": float(dice[lesion == 1].mean()) if lesion.any() else float("nan"),
        "dice_lesion_cases_ci95": bootstrap_mean_ci(dice[lesion == 1]) if lesion.any() else [],
        # Every case; a no-lesion case scores 1 only with an empty mask.
        "dice_all_cases": float(dice.mean()),
        # All voxels of all cases pooled, so large and small lesions weigh by size.
        "dice_pooled": 2.0 * overlap / voxels if voxels else 1.0,
        "false_positive_cases": int(
            sum(row["predicted_voxels"] > 0 for row in rows if not row["lesion"])
        ),
        "missed_lesion_cases": int(
            sum(row["overlap_voxels"] == 0 for row in rows if row["lesion"])
        ),
        "threshold": plugin.config.threshold,
        "data": str(data),
    }
    probs = np.array([row["p_lesion"] for row in rows])
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(np.unique(lesion)) == 2:
        detection = binary_metrics(lesion, probs, threshold=plugin.config.threshold)
        metrics.update({f"detection_{key}": value for key, value in detection.items()})
        write_report(out_dir, lesion, probs, {**metrics, "auc": detection["auc"],
                                              "ece": detection["ece"]})  # fmt: skip
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with (out_dir / "per_case.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return metrics
