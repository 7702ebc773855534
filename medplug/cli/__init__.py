"""The ``medplug`` command line (typer + rich). Each ``*_commands`` module adds one area."""
