"""Server settings and where the bearer token comes from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medplug.errors import MedplugError

TOKEN_ENV = "MEDPLUG_SERVE_TOKEN"
TOKEN_FILE_ENV = "MEDPLUG_SERVE_TOKEN_FILE"
MIN_TOKEN_LENGTH = 16
LOOPBACK = "127.0.0.1"


class ServeConfigError(MedplugError):
    """The server cannot start safely with the settings it was given."""


@dataclass
class ServeSettings:
    """Everything ``create_app`` needs; defaults suit one CPU box behind a hospital firewall."""

    token: str | None
    models_dir: Path | None = None  # None: each plugin's default folder ($MEDPLUG_MODELS/<name>)
    max_upload_bytes: int = 512 * 1024**2
    max_files: int = 1000
    max_unzipped_bytes: int = 2 * 1024**3  # real bytes unpacked from one zip, all entries
    max_unzipped_entry_bytes: int = 1024**3  # real bytes unpacked from one zip entry
    request_timeout_s: float = 300.0
    workers: int = 1
    queue_size: int = 16
    dicomweb_url: str | None = None
    insecure_local: bool = False

    def __post_init__(self) -> None:
        if self.token is None and not self.insecure_local:
            raise ServeConfigError(
                "no API token. Clients must send 'Authorization: Bearer <token>'; give the "
                f"token with --token-file FILE, ${TOKEN_FILE_ENV}=FILE or ${TOKEN_ENV}, "
                f"at least {MIN_TOKEN_LENGTH} characters, e.g. "
                f"export {TOKEN_ENV}=$(python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'). "
                "For a browser on this machine only, --insecure-local serves 127.0.0.1 "
                "without a token."
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ServeConfigError(f"the API token must be at least {MIN_TOKEN_LENGTH} characters")
        if self.workers < 1 or self.queue_size < 0:
            raise ServeConfigError("workers must be >= 1 and queue size >= 0")

    @property
    def max_pending(self) -> int:
        """Predictions running or waiting; one more is answered 503 instead of queued."""
        return self.workers + self.queue_size


def read_token(token_file: Path | None = None) -> str | None:
    """The token from ``token_file``, else the file in ``$MEDPLUG_SERVE_TOKEN_FILE``,
    else ``$MEDPLUG_SERVE_TOKEN``."""
    path = token_file or (
        Path(os.environ[TOKEN_FILE_ENV]) if os.environ.get(TOKEN_FILE_ENV) else None
    )
    if path is not None:
        if not path.is_file():
            raise ServeConfigError(f"token file {path} does not exist")
        token = path.read_text().strip()
        if not token:
            raise ServeConfigError(f"token file {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None
