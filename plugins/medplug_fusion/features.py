"""Turning ``Case`` objects into the fusion model's arrays, with a warning per gap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medplug.contract import Case
from medplug_fusion.clinical import ClinicalPreprocessor
from medplug_fusion.embeddings import EmbeddingSource
from medplug_fusion.model import FusionInputs


@dataclass
class Featurized:
    inputs: FusionInputs
    warnings: list[list[str]]  # per case


class CaseFeaturizer:
    """Embeds images and reports through their plugins and preprocesses clinical fields."""

    def __init__(
        self,
        modalities: Sequence[str],
        sources: dict[str, EmbeddingSource],
        clinical: ClinicalPreprocessor | None,
    ) -> None:
        self.modalities = list(modalities)
        self.sources = sources
        self.clinical = clinical

    def __call__(self, cases: Sequence[Case]) -> Featurized:
        n = len(cases)
        features: dict[str, np.ndarray] = {}
        present = np.zeros((n, len(self.modalities)), dtype=np.float32)
        warnings: list[list[str]] = [[] for _ in range(n)]
        for column, modality in enumerate(self.modalities):
            if modality == "clinical":
                values, mask = self._clinical(cases, warnings)
            else:
                batch = self.sources[modality].embed(cases)
                values, mask = batch.values, batch.present
                for index, reason in enumerate(batch.reasons):
                    if reason is not None:
                        warnings[index].append(
                            f"{modality} missing ({reason}); predicted without it"
                        )
            features[modality] = values
            present[:, column] = mask
        return Featurized(FusionInputs(features, present, list(self.modalities)), warnings)

    def _clinical(
        self, cases: Sequence[Case], warnings: list[list[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.clinical is not None
        records = [case.clinical for case in cases]
        values = self.clinical.transform(records)
        parsed = self.clinical.parsed(records)
        empty = self.clinical.missing_mask(records)
        mask = ~empty.all(axis=1)
        names = self.clinical.fields
        unseen = np.zeros_like(empty)
        for name, categories in self.known_categories().items():
            column = names.index(name)
            unseen[:, column] = [v is not None and v not in categories for v in parsed[name]]
        for index, record in enumerate(records):
            if not mask[index]:
                warnings[index].append(
                    "clinical missing (no usable clinical field); predicted without it"
                )
                continue
            bad = self.clinical.unparsable_fields(record)
            missing = [
                n for n, gap in zip(names, empty[index], strict=True) if gap and n not in bad
            ]
            if bad:
                warnings[index].append(f"clinical field(s) {bad} not a number; treated as missing")
            if missing:
                warnings[index].append(f"clinical field(s) {missing} missing; imputed")
            if unseen[index].any():
                fields = [n for n, new in zip(names, unseen[index], strict=True) if new]
                warnings[index].append(
                    f"clinical field(s) {fields} have a category not seen in training; "
                    "treated as unknown"
                )
        values[~mask] = 0.0
        return values, mask.astype(np.float32)

    def known_categories(self) -> dict[str, set[str]]:
        assert self.clinical is not None
        return self.clinical.known_categories()
