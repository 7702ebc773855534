"""``medplug plugins`` and ``medplug evaluate``: what is installed, and how good a model is."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from medplug.cli.output import console, medplug_errors_exit, print_table
from medplug.registry import discover, load_plugin


def list_plugins(
    as_json: bool = typer.Option(False, "--json", help="Print plugin infos as JSON."),
    check: bool = typer.Option(
        False, "--check", help="Also import each plugin (slow) to report import errors."
    ),
) -> None:
    """List plugins found through the `medplug.plugins` entry points, with their input specs.

    Plugins that ship a static declaration are described without being imported;
    `--check` imports them too, so a broken installation shows its error here.
    """
    entries = discover()
    if check:
        for entry in entries:
            _ = entry.plugin_class  # imports it; sets entry.error on failure
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
    show_labels = any(entry.info and entry.info.labels for entry in entries)
    columns = ["name", "version", "task", "inputs"] + (["labels"] if show_labels else [])
    for column in columns + ["status"]:
        table.add_column(column, no_wrap=column == "name")
    for entry in entries:
        info = entry.describe()
        if info is None:
            filler = ["-"] * (len(columns) - 1)
            table.add_row(entry.name, *filler, f"[red]failed: {entry.error}[/]")
            continue
        inputs = ", ".join(
            f"{name}:{spec.kind}"
            + (f"/{spec.modality}" if spec.modality else "")
            + (f"/{spec.spatial_dims}D" if spec.spatial_dims else "")
            + ("" if spec.required else " (optional)")
            for name, spec in info.inputs.items()
        )
        labels = [", ".join(info.labels)] if show_labels else []
        table.add_row(info.name, info.version, info.task, inputs, *labels, "[green]ok[/]")
    print_table(table)
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
    print_table(table)
    console.print(f"Figures and plots written to {out_dir}")


def register(app: typer.Typer) -> None:
    app.command(name="plugins")(list_plugins)
    app.command(name="evaluate")(evaluate)
