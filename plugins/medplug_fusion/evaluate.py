"""``medplug evaluate`` for fusion models: AUC (classification) or C-index (survival), with CIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medplug.errors import DataError
from medplug.evaluation import binary_metrics, write_report
from medplug_fusion.manifest import read_manifest
from medplug_fusion.survival import concordance

if TYPE_CHECKING:
    from medplug_fusion.plugin import FusionPlugin


def evaluate_plugin(plugin: FusionPlugin, data: Path, out_dir: Path) -> dict[str, Any]:
    """Score ``plugin`` on the manifest CSV ``data``; figures and plots go to ``out_dir``."""
    if data.suffix.lower() != ".csv":
        raise DataError(f"{data}: fusion evaluates a manifest CSV")
    fields = plugin.clinical.fields if plugin.clinical else []
    manifest = read_manifest(data, fields or None, plugin.config.task)
    featurized = plugin.featurize(manifest.cases)
    usable = featurized.inputs.present.any(axis=1)
    if not usable.any():
        raise DataError(f"{data}: no case has a usable input")
    inputs = featurized.inputs.subset(np.flatnonzero(usable))
    if plugin.config.task == "survival":
        assert manifest.durations is not None and manifest.events is not None
        metrics = survival_metrics(
            manifest.durations[usable], manifest.events[usable], plugin.model.raw(inputs)
        )
        metrics["n_without_usable_input"] = int((~usable).sum())
        write_survival_report(
            out_dir,
            manifest.durations[usable],
            manifest.events[usable],
            plugin.model.raw(inputs),
            metrics,
        )
        return metrics
    assert manifest.labels is not None
    labels = manifest.labels[usable]
    probs = plugin.model.probabilities(inputs)
    if probs.shape[1] != 2:
        raise DataError("evaluation figures are defined for binary tasks")
    metrics = binary_metrics(labels, probs[:, 1], threshold=plugin.model.threshold)
    metrics["n_without_usable_input"] = int((~usable).sum())
    metrics["n_missing_modality"] = {
        m: int((inputs.present[:, i] == 0).sum()) for i, m in enumerate(inputs.modalities)
    }
    write_report(out_dir, labels, probs[:, 1], metrics)
    return metrics


def survival_metrics(
    durations: np.ndarray, events: np.ndarray, log_risk: np.ndarray, n_boot: int = 500
) -> dict[str, Any]:
    """Harrell's C-index with a 95% percentile bootstrap interval."""
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(durations), len(durations))
        if events[idx].sum() > 0:
            boots.append(concordance(durations[idx], log_risk[idx], events[idx]))
    low, high = np.percentile(boots, [2.5, 97.5])
    return {
        "n": int(len(durations)),
        "events": int(events.sum()),
        "c_index": concordance(durations, log_risk, events),
        "c_index_ci95": [float(low), float(high)],
    }


def write_survival_report(
    out_dir: Path,
    durations: np.ndarray,
    events: np.ndarray,
    log_risk: np.ndarray,
    metrics: dict[str, Any],
) -> dict[str, Path]:
    """``metrics.json`` and Kaplan-Meier curves of the predicted risk tertiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json", "km": out_dir / "km_by_risk.png"}
    paths["metrics"].write_text(json.dumps(metrics, indent=2) + "\n")
    cuts = np.quantile(log_risk, [1 / 3, 2 / 3])
    group = np.digitize(log_risk, cuts)
    fig, ax = plt.subplots(figsize=(5, 4))
    for g, name in enumerate(("low risk", "middle", "high risk")):
        mask = group == g
        if mask.any():
            KaplanMeierFitter(label=name).fit(durations[mask], events[mask]).plot_survival_function(
                ax=ax, ci_show=False
            )
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_title(f"C-index {metrics['c_index']:.3f}")
    fig.tight_layout()
    fig.savefig(paths["km"], dpi=100)
    plt.close(fig)
    return paths
