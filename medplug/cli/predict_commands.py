"""``medplug predict``: one case (image, report, clinical fields) through one plugin.

The case is ingested with the same code as ``medplug inspect`` and ``batch``; the
prediction is printed as a table, or as the JSON of ``Prediction.to_json`` with
``--json`` (progress goes to stderr so stdout stays clean).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from medplug.cli.output import (
    console,
    error_console,
    format_spacing,
    medplug_errors_exit,
    print_table,
    stderr_progress,
)


def default_plugin(has_image: bool = True) -> str:
    """``fusion`` when installed with a model folder, else the single-modality plugin for the input.

    Fusion takes any mix of image, report and clinical fields; without it an image
    goes to ``image-classifier`` and a report alone to ``report-classifier``.
    """
    from medplug.registry import default_model_dir, discover

    installed = {entry.name for entry in discover() if entry.ok}
    fallback = "image-classifier" if has_image else "report-classifier"
    for name in ("fusion", fallback):
        if name in installed and default_model_dir(name).is_dir():
            return name
    return fallback


def predict(
    path: Path = typer.Argument(
        None,
        exists=True,
        help="DICOM folder or file, or NIfTI file (optional with --report or --clinical).",
    ),
    report: Path = typer.Option(
        None, "--report", exists=True, dir_okay=False, help="Report text file."
    ),
    clinical: str = typer.Option(
        None, "--clinical", help="Clinical fields: JSON text or a JSON file."
    ),
    plugin: str = typer.Option(
        None, "--plugin", help="Plugin name (default: fusion, else image-classifier)."
    ),
    model: Path = typer.Option(None, "--model", file_okay=False, help="Model folder."),
    rules: str = typer.Option(None, "--rules", help="Series selection rules: JSON text or file."),
    as_json: bool = typer.Option(False, "--json", help="Print the Prediction as JSON."),
    explain: bool = typer.Option(
        True,
        "--explain/--no-explain",
        help="Compute the explanation (Grad-CAM heatmap); --no-explain lets the image "
        "plugin use ONNX Runtime when installed (MEDPLUG_BACKEND).",
    ),
) -> None:
    """Ingest PATH (plus optional report and clinical fields) and run one plugin on it.

    Any of the three inputs may be missing (a report alone, clinical fields alone),
    as the contract allows; the plugin says what it needs.
    """
    from medplug.registry import check_plugin_name, load_plugin

    if path is None and report is None and clinical is None:
        error_console.print("[red]error:[/] give an image PATH, --report FILE or --clinical JSON")
        raise typer.Exit(2)
    with medplug_errors_exit():
        name = plugin or default_plugin(has_image=path is not None)
        check_plugin_name(name)  # a typo is refused before any reading or importing
        _check_clinical_option(clinical)
        from medplug.ingest.loading import load_case  # pydicom, nibabel: only now

        source = path if path is not None else report
        case_id = None if path is not None else (report.parent.name if report else "case")
        with stderr_progress(True) as progress:
            task = progress.add_task(
                f"reading {source.name if source else 'clinical fields'}", total=None
            )
            started = time.perf_counter()
            case = load_case(path, case_id=case_id, report=report, clinical=clinical, rules=rules)
            ingest_s = time.perf_counter() - started
            progress.update(task, description=f"loading plugin {name}")
            runner = load_plugin(name, model)
            if not explain and hasattr(runner, "explain"):
                runner.explain = False
            progress.update(task, description=f"predicting with {name}")
            prediction = runner.predict(case)
    if as_json:
        payload = prediction.to_json()
        payload["ingest_s"] = round(ingest_s, 4)
        console.print_json(json.dumps(payload))
        return
    _print_prediction(prediction, case, ingest_s)


def _check_clinical_option(clinical: str | None) -> None:
    """``--clinical`` must be a JSON object or a file: say so for ``[1,2,3]`` or ``42``."""
    from medplug.errors import InputError

    if clinical is None or clinical.lstrip().startswith("{") or Path(clinical).is_file():
        return
    try:
        parsed = json.loads(clinical)
    except ValueError:
        raise InputError(
            f"--clinical {clinical!r} is neither a JSON object nor a readable JSON file"
        ) from None
    kinds = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    got = kinds.get(type(parsed), "a number")
    raise InputError(f"--clinical must be a JSON object of name -> value, not {got}: {clinical}")


def _print_prediction(prediction: Any, case: Any, ingest_s: float) -> None:
    table = Table(title=f"{prediction.plugin} {prediction.plugin_version} on case {case.case_id}")
    table.add_column("field")
    table.add_column("value")
    table.add_row("label", f"[bold]{prediction.label}[/]")
    for label, probability in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        table.add_row(f"p({label})", f"{probability:.3f}")
    for key, value in prediction.outputs.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    inputs = []
    if case.image is not None:
        image = case.image
        inputs.append(
            f"image {image.modality or ''} {tuple(image.array.shape)} "
            f"spacing {format_spacing(image.spacing)}"
        )
    if case.report:
        inputs.append(f"report ({len(case.report)} chars)")
    if case.clinical:
        inputs.append(f"clinical ({len(case.clinical)} fields)")
    table.add_row("inputs", "; ".join(inputs) or "-")
    warnings = list(prediction.warnings)
    if case.image is not None:
        warnings.extend(case.image.meta.get("warnings", []))
    table.add_row("warnings", "\n".join(warnings) or "-")
    table.add_row("timing", f"ingest {ingest_s:.2f} s, predict {prediction.elapsed_s:.2f} s")
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command(name="predict")(predict)
