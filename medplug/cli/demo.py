"""The main job on the built-in sample cohort: what ``make demo`` runs.

``train`` fits the demonstration models (one per built-in plugin, each through
its own ``medplug train`` command, exactly as a user would) unless they exist;
``run`` ingests every generated case from DICOM, reads its report and clinical
fields, and prints the fused prediction with each modality's contribution.
The models are demonstrations trained on synthetic data, not clinical tools.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from rich.progress import track
from rich.table import Table
from sklearn.metrics import roc_auc_score

from medplug.cli.output import console, error_console, medplug_errors_exit, print_table
from medplug.contract import Case, ClinicalValue, Prediction
from medplug.ingest import load_case
from medplug.registry import load_plugin

CLINICAL_FIELDS = ("age", "sex", "smoking", "crp")
FUSION = "fusion"

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class DemoModel:
    """One demonstration model: its plugin name and the ``medplug train`` arguments."""

    plugin: str
    train_args: tuple[str, ...]


def demo_models(cohort: Path, models: Path) -> list[DemoModel]:
    """The three built-in plugins' demo models, in training order (fusion needs the others)."""
    manifest = str(cohort / "manifest.csv")
    image = ("image", "--data", manifest, "--config", "demo")
    report = ("text", "--data", manifest, "--text-col", "report_text", "--preset", "demo")
    report += ("--label-names", "no_lesion,lesion")
    fusion = ("fusion", "--manifest", manifest, "--config", "demo")
    fusion += ("--image-model", str(models / "image-classifier"))
    fusion += ("--report-model", str(models / "report-classifier"))
    return [
        DemoModel("image-classifier", image),
        DemoModel("report-classifier", report),
        DemoModel(FUSION, fusion),
    ]


@app.command()
def train(
    cohort: Path = typer.Option(..., help="Cohort folder written by `medplug sample-data`."),
    models: Path = typer.Option(..., help="Folder receiving one model folder per plugin."),
) -> None:
    """Train each demonstration model that is not there yet."""
    for model in demo_models(cohort, models):
        out = models / model.plugin
        if (out / "medplug.json").is_file():
            console.print(f"[green]✓[/] {model.plugin}: model present at {out}")
            continue
        console.print(f"[bold]Training demo model for {model.plugin}[/] → {out}")
        command = [sys.executable, "-m", "medplug.cli.main", "train", *model.train_args]
        command += ["--out", str(out)]
        if subprocess.run(command).returncode != 0:
            error_console.print(
                f"[bold red]error:[/] training the {model.plugin} demo model failed"
            )
            raise typer.Exit(code=1)


def read_manifest(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def clinical_fields(row: dict[str, str]) -> dict[str, ClinicalValue]:
    """Manifest strings to clinical values; an empty cell is a missing value."""
    fields: dict[str, ClinicalValue] = {}
    for name in CLINICAL_FIELDS:
        text = row.get(name, "")
        if text == "":
            fields[name] = None
            continue
        try:
            fields[name] = float(text)
        except ValueError:
            fields[name] = text
    return fields


def case_from_row(cohort: Path, row: dict[str, str]) -> Case:
    """Ingest a case the way a hospital would hand it over: DICOM folder, report, fields."""
    return load_case(
        cohort / row["dicom_dir"],
        case_id=row["case_id"],
        report=row["report_text"],
        clinical=clinical_fields(row),
    )


def results_table(rows: list[dict[str, str]], predictions: list[Prediction]) -> Table:
    table = Table(title="medplug demo: fused prediction per case (synthetic data)")
    for column in ("case", "truth", "predicted", "P(lesion)", "image", "report", "clinical"):
        table.add_column(column, justify="left" if column == "case" else "right")
    table.add_column("warnings")
    for row, prediction in zip(rows, predictions, strict=True):
        contributions = (
            prediction.explanation.modality_contributions
            if prediction.explanation and prediction.explanation.modality_contributions
            else {}
        )
        mark = "[green]✓[/]" if prediction.label == row["label_name"] else "[red]✗[/]"
        table.add_row(
            row["case_id"],
            row["label_name"],
            f"{prediction.label} {mark}",
            f"{prediction.probabilities.get('lesion', float('nan')):.2f}",
            *(
                f"{contributions.get(m, float('nan')):+.2f}"
                for m in ("image", "report", "clinical")
            ),
            "; ".join(prediction.warnings),
        )
    return table


@app.command()
def run(
    cohort: Path = typer.Option(..., help="Cohort folder written by `medplug sample-data`."),
    models: Path = typer.Option(..., help="Folder holding the demo models."),
    out: Path = typer.Option(None, help="JSON-lines file for the predictions."),
) -> None:
    """Predict every case of a cohort with the fusion plugin and print the results."""
    with medplug_errors_exit():
        rows = read_manifest(cohort)
        cases = [case_from_row(cohort, row) for row in track(rows, description="ingest")]
        # Show the missing-modality path on two cases: one without report, one without scan.
        cases[0].report = None
        cases[1].images = []
        fusion = load_plugin(FUSION, models / FUSION)
        predictions = fusion.predict_batch(cases)
    print_table(results_table(rows, predictions))
    truth = np.array([row["label_name"] == "lesion" for row in rows])
    predicted = np.array([p.label == "lesion" for p in predictions])
    p_lesion = np.array([p.probabilities.get("lesion", np.nan) for p in predictions])
    auc = roc_auc_score(truth, p_lesion) if 0 < truth.sum() < len(truth) else float("nan")
    console.print(
        f"{len(rows)} held-out cases the demo models never saw: accuracy "
        f"{np.mean(truth == predicted):.2f}, AUC {auc:.2f} ({rows[0]['case_id']} given "
        f"without its report, {rows[1]['case_id']} without its scan)"
    )
    out = out or cohort / "predictions.jsonl"
    with out.open("w") as handle:
        for prediction in predictions:
            handle.write(json.dumps(prediction.to_json()) + "\n")
    console.print(f"Prediction JSON (with explanations and provenance) written to {out}")


if __name__ == "__main__":
    app()
