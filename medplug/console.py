"""Console helpers for every command line, medplug's own and a plugin's ``medplug train KIND``.

Not part of ``medplug.cli``: a plugin package may import this module (see the
import rules in docs/DEVELOPING.md) without depending on how medplug's own
commands are laid out. ``medplug.cli.output`` re-exports these for the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from medplug.errors import MedplugError

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
