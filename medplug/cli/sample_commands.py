"""``medplug sample-data``: write the synthetic demo cohort (see ``medplug.sampledata``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medplug.cli.output import console, medplug_errors_exit


def sample_data(
    out_dir: Path = typer.Argument(..., help="Folder to write the cohort into (new or empty)."),
    cases: int = typer.Option(24, "--cases", min=1, help="Number of cases (half with a lesion)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same bytes."),
    lesion_contrast_hu: float = typer.Option(
        890.0, help="Lesion HU minus lung HU (890 = soft tissue; lower = fainter)."
    ),
    report_agreement: float = typer.Option(
        1.0, help="Probability that the report's finding matches the label."
    ),
    clinical_signal: float = typer.Option(
        1.0, help="Strength of the label's effect on the clinical fields (0 = none)."
    ),
) -> None:
    """Generate a small, deterministic, clearly synthetic CT + report + clinical cohort."""
    from medplug.sampledata import generate_cohort

    with medplug_errors_exit():
        with Progress(
            TextColumn("[bold]sample data"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("cases", total=cases)
            out = generate_cohort(
                out_dir,
                n_cases=cases,
                seed=seed,
                on_case_done=lambda _case_id: progress.advance(task),
                lesion_contrast_hu=lesion_contrast_hu,
                report_agreement=report_agreement,
                clinical_signal=clinical_signal,
            )
    console.print(f"Wrote {cases} synthetic cases to {out} (manifest: {out / 'manifest.csv'})")


def register(app: typer.Typer) -> None:
    """Add ``sample-data`` to the medplug command."""
    app.command(name="sample-data")(sample_data)
