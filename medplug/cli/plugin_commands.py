"""``medplug plugins`` and ``medplug evaluate``: what is installed, and how good a model is."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from medplug.cli.output import console, medplug_errors_exit
from medplug.registry import discover, load_plugin


def list_plugins(
    as_json: bool = typer.Option(False, "--json", help="Print plugin infos as JSON."),
) -> None:
    """List plugins found through the `medplug.plugins` entry points, with their input specs."""
    entries = discover()
    if as_json:
        payload = [
            {
                "name": entry.name,
                "target": entry.target,
                "distribution": entry.distribution,
                "error": entry.error,
                "info": entry.describe().to_dict() if entry.ok else None,
            }
            for entry in entries
        ]
        console.print_json(json.dumps(payload))
        return
    table = Table(title="medplug plugins")
    for column in ("name", "version", "task", "inputs (required / optional)", "labels", "status"):
        table.add_column(column)
    for entry in entries:
        info = entry.describe()
        if info is None:
            table.add_row(entry.name, "-", "-", "-", "-", f"[red]failed: {entry.error}[/]")
            continue
        inputs = ", ".join(
            f"{name}:{spec.kind}"
            + (f"/{spec.modality}" if spec.modality else "")
            + (f"/{spec.spatial_dims}D" if spec.spatial_dims else "")
            + ("" if spec.required else " (optional)")
            for name, spec in info.inputs.items()
        )
        table.add_row(
            info.name, info.version, info.task, inputs, ", ".join(info.labels), "[green]ok[/]"
        )
    console.print(table)
    if not entries:
        console.print("No plugins installed in the `medplug.plugins` entry-point group.")


def evaluate(
    model: Path = typer.Option(..., "--model", exists=True, file_okay=False, help="Model folder."),
    data: Path = typer.Option(..., "--data", exists=True, help="Labelled data (.npz or CSV)."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json and plots."),
) -> None:
    """Evaluate a model folder on labelled data: AUC with 95% CI, accuracy, calibration, plots."""
    # model_folder imports torch: only here, so every other command (and every
    # worker process that re-imports the CLI) starts without it.
    from medplug.model_folder import read_config

    with medplug_errors_exit():
        plugin_name = read_config(model)["plugin"]
        plugin = load_plugin(plugin_name, model)
        out_dir = out or model / "evaluation"
        metrics = plugin.evaluate(data, out_dir)
    table = Table(title=f"{plugin_name} on {data.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, list):
            value = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value)
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"Figures and plots written to {out_dir}")


def register(app: typer.Typer) -> None:
    app.command(name="plugins")(list_plugins)
    app.command(name="evaluate")(evaluate)
