"""``medplug train fusion --manifest CSV --out MODEL_DIR [--config FILE]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from medplug_fusion.config import SourceConfig


def train_command(
    manifest: Path = typer.Option(
        ...,
        "--manifest",
        exists=True,
        dir_okay=False,
        help="CSV: case_id, image, report, clinical columns, label (or duration and event).",
    ),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Model folder to write."),
    config: str = typer.Option(
        None,
        "--config",
        help="Preset (demo, classification, survival) or JSON file: task, image/report "
        "plugins, clinical fields, network size.",
    ),
    image_plugin: str = typer.Option(None, "--image-plugin", help="Override config: plugin name."),
    image_model: Path = typer.Option(None, "--image-model", help="Its model folder."),
    report_plugin: str = typer.Option(None, "--report-plugin", help="Override config: plugin."),
    report_model: Path = typer.Option(None, "--report-model", help="Its model folder."),
) -> None:
    """Train a fusion model (classification or Cox survival) on image + report + clinical."""
    from medplug.console import console, medplug_errors_exit
    from medplug.training_progress import training_progress
    from medplug_fusion.config import FusionConfig
    from medplug_fusion.fit import fit_fusion
    from medplug_fusion.manifest import read_manifest

    with medplug_errors_exit():
        settings = FusionConfig.from_preset_or_file(config) if config else FusionConfig()
        settings.image = _override(settings.image, image_plugin, image_model)
        settings.report = _override(settings.report, report_plugin, report_model)
        fields = list(settings.clinical_fields) or None
        data = read_manifest(manifest, fields, settings.task)
        if data.label_names and not settings.labels:
            settings.labels = data.label_names
        for case_id, reason in data.load_warnings.items():
            console.print(f"[yellow]warning:[/] case {case_id!r}: {reason}; trained without it")
        with training_progress(console, "embedding cases through the image and report plugins"):
            plugin = fit_fusion(data.cases, settings, data.labels, data.durations, data.events)
        plugin.save_pretrained(out)
    console.print(
        f"fusion model ({settings.task}, modalities {plugin.model.modalities}) written to {out}"
    )


def _override(
    source: SourceConfig | None, plugin: str | None, model: Path | None
) -> SourceConfig | None:
    """Apply ``--*-plugin`` / ``--*-model``: either one alone changes only itself."""
    from medplug_fusion.config import SourceConfig

    if plugin is None and model is None:
        return source
    if plugin is None and source is None:
        raise typer.BadParameter("a model folder was given without a plugin to load it")
    name = plugin or source.plugin
    keep_dir = source is not None and plugin in (None, source.plugin)
    model_dir = str(model) if model is not None else (source.model_dir if keep_dir else None)
    return SourceConfig(name, model_dir)
