"""Calibration and operating point, both fitted on validation data only.

Temperature scaling (``medplug.calibration``) fixes over-confidence without
changing the ranking; the operating threshold (Youden's J) is then chosen on
the calibrated validation probabilities, so the stored label rule and the
reported probabilities agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medplug.calibration import fit_temperature, softmax_with_temperature
from medplug.evaluation import expected_calibration_error, youden_threshold


@dataclass
class Calibration:
    temperature: float = 1.0
    threshold: float = 0.5  # on P(positive); binary models only
    val_ece_before: float | None = None
    val_ece_after: float | None = None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax_with_temperature(logits, self.temperature)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(val_logits: np.ndarray, val_labels: np.ndarray) -> Calibration:
    """Temperature on validation logits, then Youden threshold on calibrated probabilities."""
    val_labels = np.asarray(val_labels).reshape(-1)
    temperature = fit_temperature(val_logits, val_labels)
    calibration = Calibration(temperature=temperature)
    if val_logits.shape[1] == 2 and len(np.unique(val_labels)) == 2:
        before = softmax_with_temperature(val_logits, 1.0)[:, 1]
        after = calibration.probabilities(val_logits)[:, 1]
        calibration.threshold = youden_threshold(val_labels, after)
        calibration.val_ece_before = expected_calibration_error(val_labels, before)
        calibration.val_ece_after = expected_calibration_error(val_labels, after)
    return calibration
