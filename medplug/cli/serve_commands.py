"""``medplug serve``: the REST API and web page for viewers, under uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from medplug.cli.output import console, error_console


def serve(
    host: str = typer.Option(
        "127.0.0.1",  # medplug.serve.settings.LOOPBACK, not imported at CLI start
        help="Address to bind. Default loopback only; any other address must be given "
        "explicitly, and plain HTTP needs a TLS reverse proxy in front (docs/security.md). "
        "--insecure-local always binds 127.0.0.1.",
    ),
    port: int = typer.Option(8000, help="TCP port."),
    token_file: Path = typer.Option(
        None, "--token-file", help="File holding the bearer token (else $MEDPLUG_SERVE_TOKEN)."
    ),
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="No token; binds 127.0.0.1 only (for a local browser)."
    ),
    models: Path = typer.Option(
        None, "--models", help="Folder of model folders, one per plugin (else $MEDPLUG_MODELS)."
    ),
    workers: int = typer.Option(1, help="Predictions run at once (threads)."),
    queue: int = typer.Option(16, help="Predictions that may wait; more are answered 503."),
    max_upload_mb: int = typer.Option(512, help="Largest request body, MiB (413 above)."),
    max_files: int = typer.Option(1000, help="Most files per upload or zip (413 above)."),
    max_volume_mb: int = typer.Option(
        1024,
        help="Largest decoded image volume, MiB: a small compressed upload (gzip NIfTI, "
        "deflated DICOM) can declare gigabytes. $MEDPLUG_MAX_VOLUME_BYTES wins if set.",
    ),
    timeout: float = typer.Option(300.0, help="Seconds before a request is answered 504."),
    dicomweb_url: str = typer.Option(
        None, "--dicomweb-url", help="DICOMweb server that study_uid requests fetch from."
    ),
) -> None:
    """Serve the REST API (OpenAPI at /docs) and the web page at /."""
    # fastapi, uvicorn and the app are imported only when serving: every other
    # command starts without them.
    import uvicorn

    from medplug.serve import create_app
    from medplug.serve.settings import LOOPBACK, ServeConfigError, ServeSettings, read_token

    try:
        token = None if insecure_local else read_token(token_file)
        settings = ServeSettings(
            token=token,
            models_dir=models,
            max_upload_bytes=max_upload_mb * 1024**2,
            max_files=max_files,
            request_timeout_s=timeout,
            workers=workers,
            queue_size=queue,
            dicomweb_url=dicomweb_url,
            insecure_local=insecure_local,
        )
    except ServeConfigError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    if insecure_local and host != LOOPBACK:
        console.print(f"--insecure-local: binding {LOOPBACK} only, not {host}")
        host = LOOPBACK
    if host != LOOPBACK:
        console.print(
            f"binding {host}: this is plain HTTP; put a TLS reverse proxy in front "
            "(see docs/security.md)",
            highlight=False,
        )
    # Ingest reads the bound at each load (medplug.ingest.checks.max_volume_bytes).
    os.environ.setdefault("MEDPLUG_MAX_VOLUME_BYTES", str(max_volume_mb * 1024**2))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console.print(f"medplug serve on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,  # uvicorn's log has query strings; medplug.serve.access does not
        timeout_keep_alive=5,
        log_level="info",
    )


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
