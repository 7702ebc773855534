"""``medplug keygen``, ``sign-model`` and ``verify-model``: signed model folders.

A site that sets ``MEDPLUG_TRUSTED_KEYS`` loads only model folders whose
``medplug.json`` is signed by one of its keys (see docs/security.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from medplug.cli.output import console, medplug_errors_exit

PASSWORD_ENV = "MEDPLUG_SIGNING_KEY_PASSWORD"


def keygen(
    private: Path = typer.Option(..., "--private", help="Where to write the private key (PEM)."),
    public: Path = typer.Option(..., "--public", help="Where to write the public key (PEM)."),
) -> None:
    """Make an Ed25519 key pair for signing model folders (private key mode 0600)."""
    from medplug.model_signing import generate_key_pair

    with medplug_errors_exit():
        generate_key_pair(private, public)
    console.print(
        f"private key {private} (keep it off serving machines); public key {public} "
        "(give it to sites via MEDPLUG_TRUSTED_KEYS)",
        highlight=False,
    )


def sign_model(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Model folder."),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, help="Private key PEM."),
) -> None:
    """Verify a model folder's hashes, then sign its medplug.json (writes medplug.json.sig).

    An encrypted private key's password is read from $MEDPLUG_SIGNING_KEY_PASSWORD.
    """
    from medplug.model_signing import sign_folder

    password = os.environ.get(PASSWORD_ENV)
    with medplug_errors_exit():
        signature = sign_folder(folder, key, password.encode() if password else None)
    console.print(f"signed: {signature}", highlight=False)


def verify_model(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Model folder."),
) -> None:
    """Check a model folder as loading would: hashes, unhashed weights, signature if required."""
    from medplug.model_folder import read_config
    from medplug.model_signing import TRUSTED_KEYS_ENV, trusted_keys_configured

    with medplug_errors_exit():
        config = read_config(folder)
    signed = "signature checked" if trusted_keys_configured() else f"{TRUSTED_KEYS_ENV} not set"
    console.print(
        f"ok: {folder} ({config.get('plugin')}, {len(config.get('file_sha256', {}))} files "
        f"hashed, {signed})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command(name="keygen")(keygen)
    app.command(name="sign-model")(sign_model)
    app.command(name="verify-model")(verify_model)
