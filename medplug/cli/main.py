"""Entry point of the ``medplug`` command.

Each area of the product registers its own commands from its own module, so
this file stays a table of contents. Plugin packages add ``medplug train KIND``
sub-commands through the ``medplug.trainers`` entry-point group.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points

import typer

from medplug.cli.output import error_console
from medplug.registry import TRAINER_GROUP
from medplug.threads import THREADS_ENV, apply_thread_policy

app = typer.Typer(
    help="Run medical AI plugins on DICOM, NIfTI, reports and clinical fields.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a model for a plugin.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@app.callback()
def main(
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="Threads per model for inference and training (else $MEDPLUG_THREADS, "
        "$OMP_NUM_THREADS, or the cores left free).",
    ),
) -> None:
    """Run medical AI plugins on DICOM, NIfTI, reports and clinical fields."""
    if threads is not None:
        # Read by medplug.threads wherever a command applies the policy (and by
        # worker processes, which inherit the environment).
        os.environ[THREADS_ENV] = str(threads)
    # One policy for every command, set before torch is imported (batch and serve
    # refine it for their workers); see medplug/threads.py.
    apply_thread_policy()


COMMAND_MODULES = (
    "medplug.cli.plugin_commands",  # plugins, evaluate
    "medplug.cli.inspect_commands",  # inspect
    "medplug.cli.predict_commands",  # predict
    "medplug.cli.sample_commands",  # sample-data
    "medplug.cli.batch_commands",  # batch, listen
    "medplug.cli.serve_commands",  # serve
    "medplug.cli.model_commands",  # keygen, sign-model, verify-model
)

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def _broken_trainer(name: str, error: Exception) -> Callable[[], None]:
    def report() -> None:
        error_console.print(f"[bold red]error:[/] trainer {name!r} failed to load: {error}")
        raise typer.Exit(code=2)

    report.__doc__ = f"(unavailable: {error})"
    return report


for trainer in entry_points(group=TRAINER_GROUP):
    # Trainer modules keep heavy imports inside their function, so this stays cheap;
    # a broken one is reported when called instead of breaking every command.
    try:
        command = trainer.load()
    except Exception as exc:
        command = _broken_trainer(trainer.name, exc)
    train_app.command(name=trainer.name)(command)


if __name__ == "__main__":
    app()
