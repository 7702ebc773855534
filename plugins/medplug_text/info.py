"""The report plugin's self-description (``PluginInfo``)."""

from __future__ import annotations

from typing import Any

from medplug.contract import InputSpec, PluginInfo
from medplug_text import PLUGIN_NAME, __version__


def plugin_info(
    labels: list[str] | None = None, metrics: dict[str, Any] | None = None
) -> PluginInfo:
    return PluginInfo(
        name=PLUGIN_NAME,
        version=__version__,
        task="report classification",
        labels=list(labels or []),
        inputs={
            "report": InputSpec(
                kind="text",
                description="Free-text radiology report; sections (findings, impression) are "
                "used when headed, long reports are chunked, XXXX placeholders accepted.",
            )
        },
        outputs={
            "probabilities": "calibrated (temperature-scaled) class probabilities",
            "embedding": "mean-pooled last hidden state, averaged over chunks",
            "token_attributions": "integrated gradients per token of the scrubbed report",
        },
        description="Hugging Face sequence classifier over radiology reports: a compact "
        "offline BERT (WordPiece tokenizer trained on the reports, optional MLM domain "
        "pretraining) or any local HF checkpoint fine-tuned as backbone.",
        metrics=dict(metrics or {}),
        authors="medplug",
    )
