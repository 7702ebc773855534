"""Figures every plugin reports the same way: AUC with a bootstrap CI,
accuracy, sensitivity, specificity, F1, Brier score and expected calibration
error, plus ROC and reliability plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# scikit-learn is imported inside the functions that use it: predicting never pays for it.


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the positive-class probability with equal-width bins."""
    labels = np.asarray(labels, dtype=float).reshape(-1)
    probs = np.asarray(probs, dtype=float).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(labels[mask].mean() - probs[mask].mean())
    return float(ece)


def bootstrap_auc_ci(
    labels: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the ROC AUC."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs).reshape(-1)
    aucs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() == labels[idx].max():
            continue
        aucs.append(roc_auc_score(labels[idx], probs[idx]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """Operating point maximising sensitivity + specificity (chosen on validation data)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(
        np.asarray(labels).reshape(-1), np.asarray(probs).reshape(-1), drop_intermediate=False
    )
    best = int(np.argmax(tpr - fpr))
    # Any cut between this score and the next lower one scores the same on validation;
    # the midpoint leaves a margin for new cases instead of sitting on a validation score.
    upper = min(float(thresholds[best]), 1.0)
    lower = float(thresholds[best + 1]) if best + 1 < len(thresholds) else upper
    return float(np.clip((upper + lower) / 2, 0.0, 1.0))


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n_boot: int = 1000
) -> dict[str, Any]:
    """All figures for a binary task; ``probs`` is P(positive class)."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    labels = np.asarray(labels).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=float).reshape(-1)
    predicted = (probs >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    low, high = bootstrap_auc_ci(labels, probs, n_boot=n_boot)
    return {
        "n": int(len(labels)),
        "auc": float(roc_auc_score(labels, probs)),
        "auc_ci95": [low, high],
        "accuracy": (tp + tn) / len(labels),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "brier": float(brier_score_loss(labels, probs)),
        "ece": expected_calibration_error(labels, probs),
        "threshold": float(threshold),
    }


def write_report(
    out_dir: str | Path, labels: np.ndarray, probs: np.ndarray, metrics: dict[str, Any]
) -> dict[str, Path]:
    """Write ``metrics.json``, ``roc.png`` and ``reliability.png`` into ``out_dir``."""
    import matplotlib
    from sklearn.metrics import roc_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=float).reshape(-1)
    paths = {"metrics": out / "metrics.json", "roc": out / "roc.png"}
    paths["reliability"] = out / "reliability.png"
    paths["metrics"].write_text(json.dumps(metrics, indent=2) + "\n")

    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {metrics['auc']:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(paths["roc"], dpi=100)
    plt.close(fig)

    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, 9)
    centres, observed = [], []
    for b in range(10):
        mask = which == b
        if mask.any():
            centres.append(probs[mask].mean())
            observed.append(labels[mask].mean())
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot(centres, observed, "o-", label=f"ECE {metrics['ece']:.3f}")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(paths["reliability"], dpi=100)
    plt.close(fig)
    return paths
