"""``medplug train image``: train the image classifier on an .npz or a manifest CSV.

Heavy imports stay inside the command so ``medplug --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer


def train_command(
    data: Path = typer.Option(
        ..., "--data", exists=True, help="MedMNIST-style .npz or manifest CSV."
    ),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    config: str = typer.Option(
        None, "--config", help="Config JSON file, or a shipped config name (demo, pneumoniamnist)."
    ),
    image_column: str = typer.Option(
        None, "--image-column", help="Manifest column with image paths."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Override the config's epochs."),
    seed: int = typer.Option(None, "--seed", help="Override the config's seed."),
) -> None:
    """Train a MONAI CNN image classifier, calibrate it on validation data, save a model folder."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from medplug.console import console, medplug_errors_exit
    from medplug_image.config import ImageModelConfig, resolve_config
    from medplug_image.fit import fit_model_folder

    with medplug_errors_exit():
        settings = resolve_config(config) if config else ImageModelConfig()
        if epochs is not None:
            settings.epochs = epochs
        if seed is not None:
            settings.seed = seed
        with Progress(
            TextColumn("[bold]epoch {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("loading data", total=settings.epochs * settings.ensemble)

            def on_epoch(record: dict) -> None:
                text = f"loss {record['loss']:.4f}  val AUC {record['val_auc']:.4f}"
                if settings.ensemble > 1:
                    text = f"member {record['member'] + 1}/{settings.ensemble}  {text}"
                done = record["member"] * settings.epochs + record["epoch"]
                progress.update(task, completed=done, description=text)
                progress.console.log(f"epoch {record['epoch']}: {text}")

            folder, result, metrics = fit_model_folder(data, out, settings, image_column, on_epoch)
    console.print(
        f"Saved {folder} (best epochs {result.best_epochs}, val AUC {result.best_val_auc:.4f}, "
        f"{result.seconds:.0f} s)"
    )
