"""CLI tables stay whole: plain text off a terminal, records when too wide, never '…'."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from medplug.cli.output import print_table

LONG = "case0001-with-a-rather-long-identifier"


def sample_table() -> Table:
    table = Table(title="results")
    for column in ("case", "truth", "predicted", "P(lesion)", "image", "report", "warnings"):
        table.add_column(column)
    table.add_row(LONG, "lesion", "[green]lesion ✓[/]", "0.97", "+0.20", "+0.31", "a\nb")
    return table


def render(terminal: bool, width: int, monkeypatch: pytest.MonkeyPatch, mode: str = "") -> str:
    monkeypatch.setenv("MEDPLUG_TABLES", mode)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    print_table(sample_table(), console)
    return buffer.getvalue()


def test_not_a_terminal_prints_plain_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    text = render(False, 80, monkeypatch)
    lines = text.splitlines()
    assert lines[0] == "results"
    assert lines[1].split() == [
        "case",
        "truth",
        "predicted",
        "P(lesion)",
        "image",
        "report",
        "warnings",
    ]
    assert LONG in lines[3] and "lesion ✓" in lines[3] and "a; b" in lines[3]
    assert "…" not in text and "[green]" not in text


def test_narrow_terminal_prints_records_without_ellipsis(monkeypatch: pytest.MonkeyPatch) -> None:
    text = render(True, 40, monkeypatch)
    assert "…" not in text
    assert "predicted" in text and "0.97" in text
    assert max(len(line) for line in text.splitlines()) <= 40


def test_wide_terminal_keeps_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    text = render(True, 200, monkeypatch)
    assert LONG in text and ("┃" in text or "│" in text)


def test_plain_can_be_forced_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert render(True, 200, monkeypatch, "plain").splitlines()[0] == "results"
