"""``medplug batch`` and ``medplug listen``: run plugins next to a PACS."""

from __future__ import annotations

import gc
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import typer

from medplug.cli.output import console, medplug_errors_exit
from medplug.errors import DataError, MedplugError


def _load_plugins(names: list[str], model_dirs: list[Path] | None):
    from medplug.registry import load_plugin

    model_dirs = list(model_dirs or [])
    if model_dirs and len(model_dirs) != len(names):
        raise MedplugError(
            f"give one --model per --plugin ({len(names)} plugins, {len(model_dirs)} models), "
            "or none to use $MEDPLUG_MODELS/<plugin>"
        )
    return [
        load_plugin(name, model_dirs[i] if model_dirs else None) for i, name in enumerate(names)
    ]


def _skip_explanations(plugins: list) -> None:
    """With --no-heatmaps nothing reads a heatmap: plugins that can skip computing one
    (the image plugin's ``explain``; Grad-CAM is a backward pass per study) do."""
    for loaded in plugins:
        if hasattr(loaded, "explain"):
            loaded.explain = False


def _heatmap_format(value: str, heatmaps: bool = True) -> str:
    """The checked --heatmap-format; --no-heatmaps means none."""
    from medplug.dicom_out import HEATMAP_FORMATS

    if value not in HEATMAP_FORMATS:
        raise MedplugError(f"--heatmap-format must be one of {', '.join(HEATMAP_FORMATS)}")
    return value if heatmaps else "none"


def _load_plugins_in_background(names: list[str], model_dirs: list[Path] | None) -> Future:
    """Import and load the plugins on a thread while the worker processes find the studies.

    Importing torch, MONAI and transformers takes several seconds of one core;
    meanwhile the header scan runs in the worker processes on the other cores.
    """
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medplug-plugins")
    try:
        return loader.submit(_load_plugins, names, model_dirs)
    finally:
        loader.shutdown(wait=False)


def _read_rules(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"rules file {path}: not readable JSON ({exc})") from exc


def _parse_filters(filters: list[str] | None) -> dict[str, str]:
    parsed = {}
    for item in filters or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MedplugError(
                f"study filter {item!r} is not KEY=VALUE (e.g. ModalitiesInStudy=CT)"
            )
        parsed[key] = value
    return parsed


def _pause_collector() -> None:
    """No cyclic garbage collection while torch, MONAI, transformers and the models load.

    Each full collection walks every object made so far, and imports make millions:
    about 1.5 s of collections before the first study. Resumed by ``_freeze_loaded_heap``.
    """
    gc.disable()


def _freeze_loaded_heap() -> None:
    """Hide the imported modules and loaded models from the collector, then resume it.

    They live until the process ends, yet every full collection (and the one at
    interpreter exit, ~1.7 s) would walk them all. ``gc.freeze`` moves them to a
    generation the collector never scans; objects made later are collected as usual.
    """
    gc.freeze()
    gc.enable()


class _QuietFileHandler(logging.FileHandler):
    """A log line that cannot be written (disk full) is dropped, not printed as a traceback.

    The run itself notices the full disk at its next journal or output write
    and stops with one clear line.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


def _setup_logging(out: Path, verbose: bool) -> None:
    """Log to ``<out>/batch.log``; study identifiers in it are hashes unless asked otherwise."""
    from medplug.batch.storage import stop_error, storage_problem

    logger = logging.getLogger("medplug.batch")
    logger.setLevel(logging.INFO)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handler = _QuietFileHandler(out / "batch.log", encoding="utf-8")
    except OSError as exc:
        problem = storage_problem(exc)
        if problem is None:
            raise
        raise stop_error(out, *problem) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if verbose:
        logger.addHandler(logging.StreamHandler())


def batch(
    source: str = typer.Argument(..., help="Folder (searched recursively) or DICOMweb base URL."),
    plugin: list[str] = typer.Option(..., "--plugin", help="Plugin name; repeat for several."),
    out: Path = typer.Option(..., "--out", help="Output folder (journal, JSONL, CSV, SRs)."),
    model: list[Path] = typer.Option(None, "--model", help="Model folder, one per --plugin."),
    rules: Path = typer.Option(None, "--rules", help="Series selection rules (JSON)."),
    workers: int = typer.Option(2, "--workers", help="Decoding processes."),
    batch_size: int = typer.Option(8, "--batch-size", help="Studies per predict_batch call."),
    threads: int = typer.Option(
        None, "--threads", help="Torch threads for inference (default: cores minus workers)."
    ),
    manifest: Path = typer.Option(
        None, "--manifest", help="CSV: study_uid/accession -> report_text and clinical fields."
    ),
    study_filter: list[str] = typer.Option(
        None, "--filter", help="QIDO-RS study filter KEY=VALUE (DICOMweb source)."
    ),
    deidentify: bool = typer.Option(
        False, "--deidentify", help="PS3.15 basic profile on written outputs (pseudonyms)."
    ),
    pseudonym_map: Path = typer.Option(
        None, "--pseudonym-map", help="Local SQLite pseudonym map (default ~/.local/share)."
    ),
    push: bool = typer.Option(
        True, "--push/--no-push", help="Send SRs back to the source (DICOMweb: STOW-RS)."
    ),
    push_to: str = typer.Option(
        None, "--push-to", help="Send SRs to this URL or AE@host:port instead."
    ),
    heatmap_format: str = typer.Option(
        "pm",
        "--heatmap-format",
        help="Heatmaps as pm (DICOM Parametric Map on every source slice), sc (RGB "
        "Secondary Capture of the peak slice, for viewers that cannot overlay) or none.",
    ),
    heatmaps: bool = typer.Option(
        True, "--heatmaps/--no-heatmaps", help="--no-heatmaps: --heatmap-format none."
    ),
    fhir: bool = typer.Option(
        True, "--fhir/--no-fhir", help="A FHIR R4 DiagnosticReport per study (fhir/)."
    ),
    show_identifiers: bool = typer.Option(
        False, "--show-identifiers", help="Log study UIDs instead of their hashes."
    ),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Rerun failed studies."),
    retries: int = typer.Option(
        10, "--retries", min=0, help="DICOMweb: retries of a failed request (backoff + jitter)."
    ),
    retry_max_wait: float = typer.Option(
        10.0, "--retry-max-wait", min=0.0, help="DICOMweb: longest wait between retries (s)."
    ),
    network_timeout: float = typer.Option(
        30.0, "--network-timeout", min=0.1, help="DICOMweb: connect/read timeout (s)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    verbose: bool = typer.Option(False, "--verbose", help="Also log to the console."),
    engine: str = typer.Option(
        "local", "--engine", help="local: processes on this machine; ray: a Ray cluster."
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster: auto (ray start on this machine) or ray://HOST:10001; "
        "default: a private Ray on this machine.",
    ),
    ray_actors: int = typer.Option(
        1, "--ray-actors", min=1, help="Ray: inference actors (each loads the plugins once)."
    ),
    ray_actor_cpus: float = typer.Option(
        1.0, "--ray-actor-cpus", min=0.0, help="Ray: CPUs per inference actor."
    ),
    ray_gpus: float = typer.Option(
        0.0, "--ray-gpus", min=0.0, help="Ray: GPUs per inference actor (0: CPU inference)."
    ),
) -> None:
    """Run plugins over every study in a folder or a DICOMweb server; resumable."""
    from medplug.batch.destinations import parse_destination
    from medplug.batch.dicomweb import RetryPolicy
    from medplug.batch.manifest import Manifest
    from medplug.batch.ray_options import RayOptions
    from medplug.batch.runner import BatchOptions, check_engine, run_batch, worker_pool
    from medplug.batch.studies import discover_dicomweb, discover_folder

    with medplug_errors_exit():
        check_engine(engine)  # before any work: ray without Ray says how to install it
    _pause_collector()
    retry = RetryPolicy(
        retries=retries,
        first_wait=min(0.5, retry_max_wait),
        max_wait=retry_max_wait,
        timeout=network_timeout,
    )
    # The ray engine decodes on the cluster: no process pool here (discovery scans itself).
    local_workers = workers if engine == "local" else 0
    with medplug_errors_exit(), worker_pool(local_workers) as pool:
        is_web = source.startswith(("http://", "https://"))
        if not is_web and not Path(source).is_dir():
            raise MedplugError(f"source {source!r} is neither a folder nor an http(s) URL")
        _setup_logging(out, verbose)
        loading = _load_plugins_in_background(plugin, model) if pool is not None else None
        discovery = (
            discover_dicomweb(source.rstrip("/"), _parse_filters(study_filter), retry)
            if is_web
            else discover_folder(Path(source), workers=max(workers, 1), pool=pool)
        )
        plugins = loading.result() if loading is not None else _load_plugins(plugin, model)
        heatmap_format = _heatmap_format(heatmap_format, heatmaps)
        if heatmap_format == "none":
            _skip_explanations(plugins)
        _freeze_loaded_heap()
        destination = None
        if push_to:
            destination = parse_destination(push_to, retry=retry)
        elif push and is_web:
            destination = parse_destination(source.rstrip("/"), retry=retry)
        options = BatchOptions(
            out_dir=out,
            workers=workers,
            threads=threads,
            batch_size=batch_size,
            rules=_read_rules(rules),
            manifest=Manifest.read(manifest) if manifest else Manifest.empty(),
            deidentify=deidentify,
            pseudonym_map=pseudonym_map,
            heatmap_format=heatmap_format,
            write_fhir=fhir,
            show_identifiers=show_identifiers,
            retry_errors=retry_errors,
            source_kind="dicomweb" if is_web else "folder",
            progress=progress,
            retry=retry,
            search_retries=discovery.retries,
            engine=engine,
            ray=RayOptions(
                address=ray_address,
                actors=ray_actors,
                actor_cpus=ray_actor_cpus,
                actor_gpus=ray_gpus,
            ),
        )
        summary = run_batch(discovery, plugins, options, destination, pool=pool)
    counts = summary.counts
    network = ""
    if is_web or destination is not None:
        network = (
            f"; {summary.retried_studies} studies needed {summary.retries} network retries"
            f" (search: {summary.search_retries})"
        )
    console.print(
        f"{counts.get('done', 0)} done, {counts.get('error', 0)} failed"
        f" ({len(discovery.skipped)} non-DICOM files skipped){network}; results in {out}",
        highlight=False,
    )


def listen(
    ae_title: str = typer.Option(..., "--ae-title", help="Our AE title."),
    port: int = typer.Option(..., "--port", help="TCP port to listen on."),
    plugin: list[str] = typer.Option(..., "--plugin", help="Plugin name; repeat for several."),
    allow: list[str] = typer.Option(
        ..., "--allow", help="Calling AE title allowed to send; repeat for several."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (spool, journal, JSONL, SRs)."),
    model: list[Path] = typer.Option(None, "--model", help="Model folder, one per --plugin."),
    forward_to: str = typer.Option(
        None, "--forward-to", help="Send results to URL (STOW-RS) or AE@host:port (C-STORE)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    quiet_seconds: float = typer.Option(
        5.0, "--quiet-seconds", help="A study is complete after this long without new images."
    ),
    rules: Path = typer.Option(None, "--rules", help="Series selection rules (JSON)."),
    manifest: Path = typer.Option(None, "--manifest", help="CSV of reports/clinical fields."),
    deidentify: bool = typer.Option(
        False, "--deidentify", help="PS3.15 basic profile on written and forwarded results."
    ),
    pseudonym_map: Path = typer.Option(None, "--pseudonym-map", help="Local pseudonym map."),
    show_identifiers: bool = typer.Option(False, "--show-identifiers"),
    heatmap_format: str = typer.Option(
        "pm", "--heatmap-format", help="Heatmaps as pm (Parametric Map), sc or none."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Also log to the console."),
) -> None:
    """Receive studies by DICOM C-STORE, run plugins when a study goes quiet, forward results."""
    import signal
    import threading

    from medplug.batch.destinations import parse_destination
    from medplug.batch.listener import ListenerOptions, StudyListener
    from medplug.batch.manifest import Manifest

    _pause_collector()
    with medplug_errors_exit():
        _setup_logging(out, verbose)
        heatmap_format = _heatmap_format(heatmap_format)
        plugins = _load_plugins(plugin, model)
        if heatmap_format == "none":
            _skip_explanations(plugins)
        _freeze_loaded_heap()
        destination = parse_destination(forward_to, calling_ae=ae_title) if forward_to else None
        listener = StudyListener(
            plugins,
            ListenerOptions(
                ae_title=ae_title,
                port=port,
                allowed_aets=list(allow),
                out_dir=out,
                host=host,
                quiet_seconds=quiet_seconds,
                manifest=Manifest.read(manifest) if manifest else Manifest.empty(),
                rules=_read_rules(rules),
                deidentify=deidentify,
                pseudonym_map=pseudonym_map,
                show_identifiers=show_identifiers,
                heatmap_format=heatmap_format,
            ),
            destination,
        )
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        listener.start()
        console.print(f"listening as {ae_title} on {host}:{port}; Ctrl-C to stop", highlight=False)
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            listener.stop()


def register(app: typer.Typer) -> None:
    """Add ``batch`` and ``listen``."""
    app.command(name="batch")(batch)
    app.command(name="listen")(listen)
