"""Shared console, error handling and table printing for the CLI.

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

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from medplug.errors import MedplugError

TABLES_ENV = "MEDPLUG_TABLES"
console = Console()
error_console = Console(stderr=True)


@contextmanager
def medplug_errors_exit() -> Iterator[None]:
    """Turn a ``MedplugError`` into ``error: ...`` on stderr and exit code 2."""
    try:
        yield
    except MedplugError as exc:
        # soft_wrap: one line however narrow the terminal (or 80 columns when piped to a log)
        error_console.print(
            f"[bold red]error:[/] {escape(str(exc))}",  # the message's own [..] stays text
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        raise typer.Exit(code=2) from None


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
