"""Synthetic radiology reports whose finding follows (or, on purpose, contradicts) a label.

Several phrasings per section, occasional ``XXXX`` de-identification
placeholders (the style of public de-identified report sets), negated
mentions in normal reports ("no nodule"), and unrelated incidental findings
in both classes, so a text model has to read rather than spot one keyword.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INDICATIONS = (
    "{age}-year-old {sex_word} with chronic cough.",
    "{age}-year-old {sex_word}, {smoking_phrase}, screening.",
    "Shortness of breath. History of XXXX.",
    "XXXX-year-old {sex_word} with chest pain.",
    "Follow-up of abnormal chest radiograph.",
    "{age}-year-old {sex_word} with weight loss and cough.",
    "Preoperative evaluation.",
    "Dyspnea on exertion, {smoking_phrase}.",
)
COMPARISONS = ("None.", "XXXX.", "Chest radiograph from XXXX.", "No prior CT available.")
TECHNIQUES = (
    "Axial CT images of the chest were obtained without intravenous contrast.",
    "Non-contrast CT of the chest with axial 2.5 mm reconstructions.",
    "Low-dose CT of the chest without contrast.",
)
POSITIVE_FINDINGS = (
    "There is a {size} mm solid nodule in the {lobe}.",
    "A {size} mm soft tissue density nodule is present in the {lobe}.",
    "Well-circumscribed {size} mm pulmonary nodule in the {lobe}.",
    "{Lobe}: {size} mm rounded opacity consistent with a nodule.",
    "New {size} mm nodule identified in the {lobe}, not seen on XXXX.",
)
NEGATIVE_FINDINGS = (
    "The lungs are clear. No pulmonary nodule or mass.",
    "No focal consolidation, nodule or mass.",
    "Lungs are well aerated without suspicious nodules.",
    "No pulmonary nodules are identified.",
    "The lung parenchyma is unremarkable; no nodule.",
)
BACKGROUND_FINDINGS = (
    "No pleural effusion or pneumothorax.",
    "Heart size is normal. No pericardial effusion.",
    "Mild degenerative changes of the thoracic spine.",
    "No mediastinal or hilar lymphadenopathy.",
    "Osseous structures are intact.",
    "Small hiatal hernia.",
    "Mild emphysematous changes in the upper lobes.",
    "Scattered coronary artery calcifications.",
)
POSITIVE_IMPRESSIONS = (
    "{size} mm {lobe} nodule. Recommend follow-up CT in 3 months.",
    "Solitary pulmonary nodule in the {lobe} measuring {size} mm; further evaluation advised.",
    "{Lobe} nodule ({size} mm). Consider PET-CT or tissue sampling.",
    "Pulmonary nodule, {lobe}, {size} mm.",
)
NEGATIVE_IMPRESSIONS = (
    "No acute cardiopulmonary abnormality.",
    "No pulmonary nodule.",
    "Normal CT of the chest.",
    "No evidence of pulmonary nodule or mass.",
    "No suspicious pulmonary lesion. XXXX.",
)
SMOKING_PHRASES = {
    "never": "never smoker",
    "former": "former smoker",
    "current": "current smoker",
}


@dataclass(frozen=True)
class ReportFinding:
    """What the report says is there: a nodule of some size in some lobe, or nothing."""

    diameter_mm: float | None = None
    lobe: str | None = None

    @property
    def positive(self) -> bool:
        return self.diameter_mm is not None


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def write_report(
    rng: np.random.Generator, finding: ReportFinding, age: int, sex: str, smoking: str
) -> str:
    """A report with INDICATION / COMPARISON / TECHNIQUE / FINDINGS / IMPRESSION sections."""
    fill = {
        "age": str(age),
        "sex_word": "male" if sex == "M" else "female",
        "smoking_phrase": SMOKING_PHRASES[smoking],
    }
    if finding.positive:
        size = f"{finding.diameter_mm:.0f}"
        fill |= {"size": size, "lobe": finding.lobe, "Lobe": finding.lobe.capitalize()}
        main_finding = _pick(rng, POSITIVE_FINDINGS).format(**fill)
        impression = _pick(rng, POSITIVE_IMPRESSIONS).format(**fill)
    else:
        main_finding = _pick(rng, NEGATIVE_FINDINGS)
        impression = _pick(rng, NEGATIVE_IMPRESSIONS)
    n_background = int(rng.integers(1, 4))
    background = [BACKGROUND_FINDINGS[i] for i in rng.permutation(len(BACKGROUND_FINDINGS))]
    findings = [main_finding, *background[:n_background]]
    if rng.random() < 0.5:  # the key finding is not always first
        findings = [*findings[1:], findings[0]]
    sections = [
        ("EXAMINATION", "CT chest."),
        ("INDICATION", _pick(rng, INDICATIONS).format(**fill)),
        ("COMPARISON", _pick(rng, COMPARISONS)),
        ("TECHNIQUE", _pick(rng, TECHNIQUES)),
        ("FINDINGS", " ".join(findings)),
        ("IMPRESSION", impression),
    ]
    if rng.random() < 0.3:  # some reports skip comparison and technique
        sections = [s for s in sections if s[0] not in ("COMPARISON", "TECHNIQUE")]
    return "\n".join(f"{title}: {text}" for title, text in sections) + "\n"
