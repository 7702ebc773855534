"""Clinical fields (age, sex, smoking, CRP) drawn with a tunable link to the label."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOKING_LEVELS = ("never", "former", "current")
_SMOKING_BASE = np.log(np.array([0.55, 0.28, 0.17]))
_SMOKING_SHIFT = np.array([-0.8, 0.4, 1.0])  # added per unit of signal for lesion cases


@dataclass(frozen=True)
class ClinicalTruth:
    """The patient's true values (headers and reports use them; the CSV may hide some)."""

    age: int
    sex: str
    smoking: str
    crp: float


def draw_clinical(rng: np.random.Generator, label: int, signal: float) -> ClinicalTruth:
    """Lesion cases are older, smoke more, are slightly more often male and have higher CRP.

    ``signal`` scales every effect; 0 makes the fields independent of the label.
    """
    effect = signal * label
    age = int(np.clip(round(rng.normal(55 + 9 * effect, 11)), 25, 90))
    sex = "M" if rng.random() < min(0.5 + 0.08 * effect, 0.95) else "F"
    logits = _SMOKING_BASE + _SMOKING_SHIFT * effect
    probs = np.exp(logits) / np.exp(logits).sum()
    smoking = SMOKING_LEVELS[int(rng.choice(3, p=probs))]
    crp = round(float(np.exp(rng.normal(np.log(3.0) + 0.8 * effect, 0.8))), 1)
    return ClinicalTruth(age, sex, smoking, crp)


def with_missing(
    rng: np.random.Generator, truth: ClinicalTruth, missing_rate: float
) -> dict[str, int | float | str | None]:
    """The CSV view of the fields: each value independently missing (None) with missing_rate."""
    values = {"age": truth.age, "sex": truth.sex, "smoking": truth.smoking, "crp": truth.crp}
    draws = rng.random(len(values))
    return {
        name: (None if draw < missing_rate else value)
        for (name, value), draw in zip(values.items(), draws, strict=True)
    }
