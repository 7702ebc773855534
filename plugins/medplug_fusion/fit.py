"""Training a ``FusionPlugin`` from cases: embed through the named plugins, then fit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medplug.contract import Case
from medplug.errors import DataError
from medplug_fusion.clinical import ClinicalPreprocessor, infer_field_kinds
from medplug_fusion.config import FusionConfig
from medplug_fusion.embeddings import EmbeddingSource
from medplug_fusion.features import CaseFeaturizer
from medplug_fusion.loop import fit_model
from medplug_fusion.plugin import FusionPlugin


def build_sources(config: FusionConfig) -> dict[str, EmbeddingSource]:
    """Load each configured embedding plugin by name through the registry."""
    sources = {}
    for modality in ("image", "report"):
        source = getattr(config, modality)
        if source is not None:
            sources[modality] = EmbeddingSource(modality, source.plugin, source.model_dir)
    return sources


def fit_fusion(
    cases: Sequence[Case],
    config: FusionConfig,
    labels: np.ndarray | None = None,
    durations: np.ndarray | None = None,
    events: np.ndarray | None = None,
    sources: dict[str, EmbeddingSource] | None = None,
) -> FusionPlugin:
    """Fit preprocessing and the network on ``cases``; the result is ready to save."""
    cases = list(cases)
    if len(cases) < 10:
        raise DataError(f"fusion training needs at least 10 cases, got {len(cases)}")
    sources = build_sources(config) if sources is None else sources
    records = [case.clinical for case in cases]
    field_kinds = dict(config.clinical_fields)
    if not field_kinds:
        names = sorted({name for record in records for name in record})
        field_kinds = infer_field_kinds(pd.DataFrame.from_records(records, columns=names))
    clinical = ClinicalPreprocessor(field_kinds).fit(records) if field_kinds else None
    modalities = [m for m in ("image", "report") if m in sources]
    if clinical is not None:
        modalities.append("clinical")
    if not modalities:
        raise DataError(
            "fusion needs at least one modality: an image/text plugin or clinical fields"
        )
    featurized = CaseFeaturizer(modalities, sources, clinical)(cases)
    model = fit_model(config, featurized.inputs, labels, durations, events)
    return FusionPlugin(model, config, clinical, sources)
