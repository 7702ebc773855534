"""Table printing for the CLI, and the shared console (from ``medplug.console``).

Tables stay readable wherever they go: on a terminal cells fold instead of
being cut with an ellipsis, and a table too wide for the terminal is printed
one record per row; piped to a file or a log (not a terminal) it is printed as
plain aligned text with every cell whole, one line per row.
``MEDPLUG_TABLES=plain|rich`` forces either form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from medplug.console import console, error_console, medplug_errors_exit

TABLES_ENV = "MEDPLUG_TABLES"
__all__ = [
    "TABLES_ENV",
    "cell_text",
    "console",
    "error_console",
    "format_spacing",
    "medplug_errors_exit",
    "plain_table",
    "print_table",
    "stderr_progress",
    "table_rows",
]


def print_table(table: Table, target: Console | None = None) -> None:
    """Print ``table`` whole: folded, as records, or as plain text (see module docstring)."""
    target = target or console
    mode = os.environ.get(TABLES_ENV, "").strip().lower()
    if mode == "plain" or (mode != "rich" and not target.is_terminal):
        target.print(plain_table(table), markup=False, highlight=False, soft_wrap=True)
        return
    for column in table.columns:
        column.overflow = "fold"
    if _narrowest(table) > target.width:
        target.print(_as_records(table))
        return
    target.print(table)


def cell_text(cell: object) -> str:
    """A cell's text without rich markup."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    headers = [cell_text(column.header) for column in table.columns]
    columns = [[cell_text(cell) for cell in column.cells] for column in table.columns]
    return headers, [list(row) for row in zip(*columns, strict=True)]


def plain_table(table: Table) -> str:
    """Aligned columns, two spaces apart, full cells (line breaks in a cell become '; ')."""
    headers, rows = table_rows(table)
    rows = [[cell.replace("\n", "; ") for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    lines = [cell_text(table.title)] if table.title else []
    lines += [line(headers).rstrip(), line(["-" * w for w in widths]).rstrip()]
    lines += [line(row).rstrip() for row in rows]
    return "\n".join(lines)


def _narrowest(table: Table) -> int:
    """Width the table needs with every cell folded to its longest word."""
    headers, rows = table_rows(table)
    widths = []
    for i, header in enumerate(headers):
        words = [word for cell in [header] + [row[i] for row in rows] for word in cell.split()]
        widths.append(min(max((len(word) for word in words), default=1), 24))
    return sum(widths) + 3 * len(widths) + 1


def _as_records(table: Table) -> Table:
    """One block per row, ``column  value`` lines: fits any width."""
    headers, rows = table_rows(table)
    records = Table(title=table.title, show_header=False, show_lines=True)
    records.add_column(overflow="fold")
    for row in rows:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for header, cell in zip(headers, row, strict=True):
            grid.add_row(header, cell or "-")
        records.add_row(grid)
    return records


@contextmanager
def stderr_progress(show: bool) -> Iterator[Progress]:
    """A progress bar on stderr (stdout stays clean for --json), only for long jobs."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console,
        transient=True,
        disable=not show,
    )
    with progress:
        yield progress


def format_spacing(spacing: tuple[float, ...] | None) -> str:
    """Voxel spacing as ``0.7 x 0.7 x 2.5`` (``-`` when unknown)."""
    return " x ".join(f"{value:.3g}" for value in spacing) if spacing else "-"
