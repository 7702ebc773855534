"""``medplug train lesion-seg --cohort DIR --out MODEL_DIR``: train the lesion UNet on a cohort.

Heavy imports stay inside the command so ``medplug --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer


def train_command(
    cohort: Path = typer.Option(
        ..., "--cohort", exists=True, help="Cohort folder (or its manifest.csv) with lesion masks."
    ),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Model folder to write."),
    config: Path = typer.Option(
        None, "--config", exists=True, dir_okay=False, help="Config JSON (LesionSegConfig fields)."
    ),
    image_column: str = typer.Option(
        "nifti", "--image-column", help="Manifest column with the images (nifti or dicom_dir)."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Override the config's epochs."),
    seed: int = typer.Option(None, "--seed", help="Override the config's seed."),
) -> None:
    """Train a small MONAI 3D UNet on a cohort's lesion masks and save a model folder."""
    from medplug.console import console, medplug_errors_exit
    from medplug.training_progress import training_progress

    from medplug_lesion_seg.config import LesionSegConfig
    from medplug_lesion_seg.fit import fit_model_folder

    with medplug_errors_exit():
        settings = LesionSegConfig.from_file(config) if config else LesionSegConfig()
        if epochs is not None:
            settings.epochs = epochs
        if seed is not None:
            settings.seed = seed
        with training_progress(console, "reading and preprocessing the cohort"):
            folder, result, _ = fit_model_folder(cohort, out, settings, image_column)
    console.print(
        f"Saved {folder} (best epoch {result.best_epoch}, validation Dice "
        f"{result.best_val_dice:.3f}, {result.seconds:.0f} s)"
    )
