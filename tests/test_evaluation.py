"""Shared evaluation figures: operating point, calibration error, AUC interval."""

from __future__ import annotations

import numpy as np

from medplug.evaluation import binary_metrics, expected_calibration_error, youden_threshold


def test_youden_threshold_sits_between_the_classes_when_they_separate() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.01, 0.02, 0.10, 0.90, 0.999999, 0.9999999])
    threshold = youden_threshold(labels, probs)
    assert threshold == (0.10 + 0.90) / 2
    # a new positive scored a little below every validation positive is still positive
    assert 0.85 >= threshold


def test_metrics_on_known_values() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.6, 0.4, 0.9])
    metrics = binary_metrics(labels, probs, threshold=0.5, n_boot=200)
    assert metrics["auc"] == 0.75
    assert metrics["accuracy"] == 0.5
    assert metrics["sensitivity"] == 0.5 and metrics["specificity"] == 0.5
    assert 0.0 <= metrics["auc_ci95"][0] <= metrics["auc"] <= metrics["auc_ci95"][1] <= 1.0


def test_ece_is_zero_for_perfectly_calibrated_bins_and_large_for_overconfidence() -> None:
    labels = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(labels, np.full(10, 0.7)) < 1e-12
    assert expected_calibration_error(labels, np.full(10, 0.99)) > 0.25
