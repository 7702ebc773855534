"""The demonstration report model, trained on the generated sample cohort in seconds."""

from __future__ import annotations

from pathlib import Path

from medplug_text import PLUGIN_NAME

COHORT_LABELS = ["no_lesion", "lesion"]  # manifest.csv ``label`` 0 and 1


def train_demo(cohort: str | Path, models: str | Path, seed: int = 0):
    """Train ``<models>/report-classifier`` from ``<cohort>/manifest.csv`` (demo preset).

    Returns the ``TrainResult``. Called by ``medplug.cli.demo``; equivalent to
    ``medplug train text --data <cohort>/manifest.csv --text-col report_text
    --label-col label --label-names no_lesion,lesion --preset demo --out ...``.
    """
    from medplug_text.train import train_from_csv

    return train_from_csv(
        Path(cohort) / "manifest.csv",
        Path(models) / PLUGIN_NAME,
        text_col="report_text",
        label_col="label",
        preset_name="demo",
        label_names=COHORT_LABELS,
        seed=seed,
    )
