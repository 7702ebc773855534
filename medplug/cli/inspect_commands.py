"""``medplug inspect``: what a folder holds, what would be loaded and why.

Output shows what a PACS admin sees in a series table: modality, series
description, counts, geometry, transfer syntax. Patient names, IDs and dates
are never printed; Study/Series UIDs are shown as short hashes.
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
    format_spacing,
    medplug_errors_exit,
    print_table,
    stderr_progress,
)

# --------------------------------------------------------------------------- inspect


def inspect(
    path: Path = typer.Argument(..., exists=True, help="DICOM folder or file, or NIfTI file."),
    rules: str = typer.Option(None, "--rules", help="Selection rules: JSON text or a JSON file."),
    workers: int = typer.Option(None, "--workers", help="Header-reading processes."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show studies and series in PATH, skipped files with reasons, and what would be loaded.

    The verdict comes from actually loading, with the code ``predict`` uses: a
    selected series that fails is named with its error and the next one is
    tried. Exits 1 when nothing in PATH would load.
    """
    from medplug.ingest.nifti import is_nifti

    with medplug_errors_exit():
        if path.is_file() and is_nifti(path):
            _inspect_nifti(path, as_json)
            return
        scan = _scan_withstderr_progress(path, workers)
        from medplug.ingest.loading import load_selected
        from medplug.ingest.selection import explain_selection

        decisions = explain_selection(scan, rules)
        volume, attempts = load_selected(scan, rules)
    if as_json:
        console.print_json(json.dumps(_scan_json(scan, decisions, volume, attempts)))
    else:
        if scan.series:
            _print_series_table(scan, decisions)
        else:
            console.print(
                f"{scan.root}: {scan.n_files} files, no image series, "
                f"{len(scan.skipped)} skipped ({scan.elapsed_s:.2f} s)"
            )
        _print_skipped(scan)
        _print_selection(decisions, volume, attempts)
    if volume is None:
        raise typer.Exit(code=1)


def _scan_withstderr_progress(path: Path, workers: int | None) -> Any:
    from medplug.ingest.scan import group_headers, list_files, read_headers

    started = time.perf_counter()
    files = list_files(path)
    with stderr_progress(len(files) > 500) as progress:
        task = progress.add_task("reading headers", total=len(files))
        outcomes = read_headers(files, workers, lambda n: progress.advance(task, n))
    scan = group_headers(path, outcomes)
    scan.elapsed_s = time.perf_counter() - started
    return scan


def _print_series_table(scan: Any, decisions: list[Any]) -> None:
    selected = {id(d.series): d for d in decisions}
    table = Table(
        title=f"{scan.root}: {scan.n_files} files, {len(scan.series)} series in "
        f"{len(scan.studies)} studies, {len(scan.skipped)} skipped ({scan.elapsed_s:.2f} s)"
    )
    for column in (
        "study",
        "#",
        "series",
        "modality",
        "description",
        "files",
        "slices",
        "size MB",
        "matrix",
        "spacing mm",
        "orient.",
        "transfer syntax",
        "selected",
    ):
        table.add_column(
            column, justify="right" if column in ("files", "slices", "size MB") else "left"
        )
    for study in scan.studies:
        for series in study.series:
            decision = selected.get(id(series))
            pick = "-"
            if decision is not None and decision.selected_rank is not None:
                pick = f"[green]{decision.selected_rank + 1}. {decision.rule}[/]"
            table.add_row(
                study.short_uid,
                str(series.number if series.number is not None else "-"),
                series.short_uid,
                series.modality or "-",
                series.description or "-",
                str(series.n_files),
                str(series.n_slices),
                f"{series.size_bytes / 1e6:.1f}",
                f"{series.shape[0]}x{series.shape[1]}",
                format_spacing(series.spacing),
                series.orientation,
                ", ".join(series.transfer_syntax_names),
                pick,
            )
    print_table(table)


def _print_skipped(scan: Any) -> None:
    if not scan.skipped:
        return
    groups: dict[str, list[Any]] = {}
    for skipped in scan.skipped:
        groups.setdefault(skipped.category, []).append(skipped)
    table = Table(title=f"Skipped files ({len(scan.skipped)})")
    for column in ("category", "files", "reason", "examples"):
        table.add_column(column)
    for category, items in sorted(groups.items()):
        reasons = sorted({item.reason for item in items})
        examples = ", ".join(_relative(item.path, scan.root) for item in items[:3])
        table.add_row(
            category,
            str(len(items)),
            "; ".join(reasons[:2]) + (" ..." if len(reasons) > 2 else ""),
            examples + (" ..." if len(items) > 3 else ""),
        )
    print_table(table)


def _relative(path: Path, root: Path) -> str:
    """Path below the scanned folder; the file name when PATH was the file itself."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path.name
    return path.name if relative == Path(".") else str(relative)


def _print_selection(decisions: list[Any], volume: Any, attempts: list[Any]) -> None:
    if not attempts:
        console.print("[yellow]No series would be selected.[/]")
    for attempt in attempts:
        series = attempt.selection.series
        label = (
            f"series {series.number} ({series.short_uid}, "
            f"{series.modality or '-'} '{series.description}') by rule "
            f"[bold]{attempt.selection.rule}[/]"
        )
        if attempt.error is not None:
            error = attempt.error
            console.print(
                f"[bold red]Cannot load:[/] {label}: {error.category}: {error.detail}",
                highlight=False,
            )
            continue
        console.print(
            f"[bold]Would load:[/] {label}, array {tuple(volume.array.shape)}: "
            + "; ".join(r.removeprefix("ok: ") for r in attempt.selection.reasons),
            highlight=False,
        )
    if attempts and volume is None:
        console.print("[bold red]Nothing would load.[/]")
    for decision in decisions:
        if decision.selected_rank is None and decision.reasons:
            console.print(
                f"  not selected: series {decision.series.number} ({decision.series.short_uid}): "
                + " | ".join(decision.reasons)
            )


def _scan_json(
    scan: Any, decisions: list[Any], volume: Any = None, attempts: list[Any] | None = None
) -> dict[str, Any]:
    by_series = {id(d.series): d for d in decisions}
    loaded = [a for a in attempts or [] if a.error is None]
    return {
        "root": str(scan.root),
        "would_load": {
            "series": loaded[0].selection.series.short_uid,
            "rule": loaded[0].selection.rule,
            "shape": list(volume.array.shape),
        }
        if loaded
        else None,
        "load_failures": [
            {
                "series": a.selection.series.short_uid,
                "rule": a.selection.rule,
                "category": a.error.category,
                "detail": a.error.detail,
            }
            for a in attempts or []
            if a.error is not None
        ],
        "n_files": scan.n_files,
        "elapsed_s": round(scan.elapsed_s, 4),
        "studies": [
            {
                "study": study.short_uid,
                "series": [
                    {
                        "series": series.short_uid,
                        "number": series.number,
                        "modality": series.modality,
                        "description": series.description,
                        "files": series.n_files,
                        "slices": series.n_slices,
                        "size_bytes": series.size_bytes,
                        "matrix": list(series.shape),
                        "spacing": list(series.spacing) if series.spacing else None,
                        "orientation": series.orientation,
                        "transfer_syntaxes": series.transfer_syntax_names,
                        "selected_rank": by_series[id(series)].selected_rank,
                        "rule": by_series[id(series)].rule,
                        "reasons": by_series[id(series)].reasons,
                    }
                    for series in study.series
                ],
            }
            for study in scan.studies
        ],
        "skipped": [
            {"path": _relative(s.path, scan.root), "category": s.category, "reason": s.reason}
            for s in scan.skipped
        ],
    }


def _inspect_nifti(path: Path, as_json: bool) -> None:
    from medplug.ingest.nifti import load_nifti

    volume = load_nifti(path)
    facts = {
        "path": str(path),
        "format": "NIfTI",
        "shape": list(volume.array.shape),
        "spacing": [round(v, 4) for v in volume.spacing],
        "affine": volume.affine.round(4).tolist(),
        "warnings": volume.meta["warnings"],
    }
    if as_json:
        console.print_json(json.dumps(facts))
        return
    table = Table(title=str(path))
    table.add_column("field")
    table.add_column("value")
    for key, value in facts.items():
        table.add_row(key, str(value))
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command(name="inspect")(inspect)
