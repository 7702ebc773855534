"""``medplug train text``: train a report model folder from a labelled CSV.

Heavy imports (torch, transformers) happen inside the functions so that the
``medplug`` command starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def train_from_csv(
    data: str | Path,
    out: str | Path,
    text_col: str = "report_text",
    label_col: str = "label",
    preset_name: str | None = None,
    backbone: str | Path | None = None,
    label_names: list[str] | None = None,
    val_fraction: float = 0.2,
    allow_pickle: bool = False,
    **overrides: Any,
):
    """Read the CSV, hold out a stratified validation part, train, calibrate, save.

    Labels are the distinct values of ``label_col`` (numeric order when they are
    numbers); ``label_names`` renames them in that order. Returns the
    ``TrainResult``.
    """
    from medplug.errors import DataError
    from medplug_text.config import preset
    from medplug_text.data import read_labelled_csv, stratified_split
    from medplug_text.fit import train_report_model

    reports = read_labelled_csv(data, text_col, label_col)
    values = reports.label_values()
    names = list(label_names) if label_names else values
    if len(names) != len(values):
        raise DataError(f"{data}: {len(values)} label values {values} but names {names}")
    indices = [values.index(label) for label in reports.labels]
    train, val = stratified_split(indices, val_fraction, overrides.get("seed") or 0)
    config = preset(preset_name or ("backbone" if backbone else "default"), **overrides)
    return train_report_model(
        out,
        [reports.texts[i] for i in train],
        [indices[i] for i in train],
        [reports.texts[i] for i in val],
        [indices[i] for i in val],
        names,
        config,
        backbone=backbone,
        allow_pickle=allow_pickle,
        extra_config={
            "data": {
                "source": Path(data).name,
                "text_col": text_col,
                "label_col": label_col,
                "label_values": values,
                "skipped_rows": len(reports.skipped_rows),
            }
        },
    )


def train_command(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="Labelled CSV."),
    text_col: str = typer.Option("report_text", "--text-col", help="Column with report text."),
    label_col: str = typer.Option("label", "--label-col", help="Column with the label."),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    backbone: Path = typer.Option(
        None, "--backbone", help="Local HF checkpoint folder to fine-tune (default: compact BERT)."
    ),
    mlm_epochs: int = typer.Option(None, "--mlm-epochs", help="MLM domain-pretraining epochs."),
    epochs: int = typer.Option(None, "--epochs", help="Fine-tuning epochs."),
    learning_rate: float = typer.Option(None, "--lr", help="Fine-tuning learning rate."),
    max_length: int = typer.Option(None, "--max-length", help="Model window in tokens."),
    preset_name: str = typer.Option(None, "--preset", help="default, demo or backbone."),
    train_top_layers: int = typer.Option(
        None, "--train-top-layers", help="Fine-tune only the top N encoder layers (big backbones)."
    ),
    label_names: str = typer.Option(
        None, "--label-names", help="Comma-separated names for the sorted label values."
    ),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Held out for calibration."),
    seed: int = typer.Option(0, "--seed"),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept a pickle-only backbone (torch weights_only load)."
    ),
) -> None:
    """Train the report classifier: compact offline BERT, or fine-tune --backbone."""
    from medplug.console import console, medplug_errors_exit
    from medplug.training_progress import training_progress
    from medplug_text.inference import WindowSettings

    overrides: dict[str, Any] = {
        "mlm_epochs": mlm_epochs,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "train_top_layers": train_top_layers,
        "seed": seed,
    }
    if max_length is not None:
        overrides["window"] = WindowSettings(max_length=max_length, stride=max_length // 2)
    with (
        medplug_errors_exit(),
        training_progress(console, "loading reports and building the model"),
    ):
        try:
            result = train_from_csv(
                data,
                out,
                text_col,
                label_col,
                preset_name,
                backbone,
                label_names.split(",") if label_names else None,
                val_fraction,
                allow_pickle,
                **overrides,
            )
        except ValueError as exc:  # a bad preset or setting name
            raise typer.BadParameter(str(exc)) from exc
    metrics = result.val_metrics
    summary = ", ".join(
        f"{key} {metrics[key]:.3f}" for key in ("auc", "accuracy", "ece") if key in metrics
    )
    console.print(
        f"Saved {result.folder} in {result.seconds['total']:.1f} s "
        f"(temperature {result.temperature:.2f}; validation {summary or 'n/a'})"
    )
