"""``medplug batch --engine ray``: the local engine's stages as a Ray Data pipeline.

1. The driver (this process) lists the pending studies from the journal as
   small rows: locators, the SR/SC UIDs the journal fixed, the manifest's
   report and fields. No pixels pass through it.
2. Decode: a Ray task per study (one row per block) runs ``load_study`` on
   whichever node it lands on, reading the files or the WADO-RS retrieve
   there; every instance of a study stays on that worker.
3. Inference: a pool of actors (``ActorPoolStrategy``), each loading the
   plugins once (``load_plugin``, from the same model folders) and calling
   ``predict_outcomes`` on ``--batch-size`` studies: each plugin's
   ``predict_batch``. The pixels are dropped there; only predictions, the
   evidence headers and each heatmap's peak slice go on.
4. Write: a Ray task per batch builds and writes the SR, SCs and FHIR report
   (``write_dicom_outputs``) and pushes them (``deliver``). The objects carry
   the journal's UIDs, so a study redone after a failure replaces its
   outputs instead of adding new ones.
5. The driver commits each finished batch to the journal (one writer), so a
   study is recorded once however often Ray retried its tasks, and a driver
   killed mid-run resumes from the journal like the local engine.

In-flight work is bounded by Ray Data's streaming executor (its object-store
budget and backpressure), by ``RayOptions.decode_tasks`` when given, and by two
batches per actor. A study whose worker keeps dying ends as an ``error``
record (reason ``worker-lost``) once Ray's retries are spent.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medplug.batch.context import RunContext
from medplug.batch.destinations import Destination
from medplug.batch.journal import StudyEntry
from medplug.batch.loading import LoadedStudy, LoadJob, load_study
from medplug.batch.locators import locator_from_json
from medplug.batch.processing import (
    OutputPlan,
    StudyOutcome,
    WrittenStudy,
    deliver,
    output_job,
    predict_outcomes,
)
from medplug.batch.progress import BatchProgress
from medplug.batch.ray_options import RAY_MISSING, RayOptions
from medplug.contract import Plugin
from medplug.dicom_out.job import write_dicom_outputs
from medplug.errors import MedplugError

if TYPE_CHECKING:
    from medplug.batch.runner import BatchOptions

log = logging.getLogger("medplug.batch")
KEY, ITEM = "key", "item"  # the rows' columns: the study UID, the pickled StudyItem
ACTOR_TASK_RETRIES = 2  # an inference batch whose actor died is run again this often
# Studies per pipeline: bounds what the driver holds (a folder study's locator lists every
# file, ~30 KB for a 300-slice CT) and what a kill leaves marked running. Each pipeline
# starts its own actors, which load the plugins again: seconds per 2,000 studies.
CHUNK = 2000


def require_ray() -> Any:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MedplugError(RAY_MISSING) from None
    return ray


@dataclasses.dataclass
class StudyItem:
    """One study on its way through the stages (a row holds it pickled)."""

    entry: StudyEntry
    study: str  # the labeller's hash: output file names
    job: LoadJob | None = None
    loaded: LoadedStudy | None = None
    outcome: StudyOutcome | None = None
    written: WrittenStudy | None = None


def _pack(item: StudyItem) -> bytes:
    return pickle.dumps(item, protocol=5)


def _unpack(data: bytes) -> StudyItem:
    return pickle.loads(data)  # rows this run pickled itself, never outside input


# ---------------------------------------------------------------- stages (on workers)


def decode_stage(row: dict[str, Any]) -> dict[str, Any]:
    """Fetch and decode one study on this worker (``load_study`` never raises)."""
    item = _unpack(row[ITEM])
    assert item.job is not None
    with tempfile.TemporaryDirectory(prefix="medplug-ray-spool-") as spool:
        item.loaded = load_study(dataclasses.replace(item.job, spool_dir=spool))
    item.job = None
    return {KEY: row[KEY], ITEM: _pack(item)}


class InferenceActor:
    """Loads the plugins once; then ``predict_outcomes`` on each batch of studies."""

    def __init__(
        self, specs: list[tuple[str, str]], heatmap_format: str, threads: int | None
    ) -> None:
        from medplug.registry import load_plugin
        from medplug.threads import apply_thread_policy

        apply_thread_policy(requested=threads)
        self.plugins = [load_plugin(name, folder) for name, folder in specs]
        if heatmap_format == "none":  # as the CLI's: no heatmap, no explanation computed
            for plugin in self.plugins:
                if hasattr(plugin, "explain"):
                    plugin.explain = False
        self.heatmap_format = heatmap_format

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [_unpack(data) for data in batch[ITEM]]
        outcomes = [StudyOutcome(item.loaded, item.entry) for item in items]  # type: ignore[arg-type]
        # Heatmaps stay arrays (no spool folder): they travel in the row to the write task.
        predict_outcomes(self.plugins, outcomes, self.heatmap_format)
        for item, outcome in zip(items, outcomes, strict=True):
            item.loaded, item.outcome = None, outcome
        packed = np.empty(len(items), dtype=object)
        packed[:] = [_pack(item) for item in items]
        return {KEY: batch[KEY], ITEM: packed}


def write_stage(
    row: dict[str, Any], plan: OutputPlan, destination: Destination | None
) -> dict[str, Any]:
    """Write (and push) one study's SR, SCs and FHIR report; failures are its errors."""
    item = _unpack(row[ITEM])
    outcome = item.outcome
    assert outcome is not None
    job = output_job(outcome, item.study, plan)
    item.written = deliver(outcome, write_dicom_outputs(job) if job else None, destination)
    outcome.heatmaps, outcome.heatmap_slices = {}, {}  # written; the driver needs none
    return {KEY: row[KEY], ITEM: _pack(item)}


# ---------------------------------------------------------------- the driver


def plugin_specs(plugins: Sequence[Plugin]) -> list[tuple[str, str]]:
    """(name, model folder) per plugin: how each actor loads the same plugins again."""
    specs = []
    for plugin in plugins:
        if plugin.model_dir is None:
            raise MedplugError(
                f"plugin {plugin.info.name!r} was not loaded from a model folder "
                "(medplug.registry.load_plugin); the ray engine's actors need one to load it"
            )
        specs.append((plugin.info.name, str(plugin.model_dir)))
    return specs


def run_on_ray(context: RunContext, plugins: Sequence[Plugin], options: BatchOptions) -> None:
    """Run every pending study of ``context`` through the pipeline; commit as they finish."""
    ray = require_ray()
    settings = options.ray or RayOptions()
    specs = plugin_specs(plugins)
    pending = context.journal.pending()
    total = sum(context.journal.counts().values())
    with _connected(ray, settings, options.workers):
        if options.deidentify and len(_alive_nodes(ray)) > 1:
            raise MedplugError(
                "--deidentify with --engine ray needs a one-node cluster: the pseudonym "
                "map is a SQLite file on this machine; use --engine local"
            )
        with BatchProgress(options.progress, total, total - len(pending), "ray") as progress:
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start : start + CHUNK]
                _run_chunk(ray, context, chunk, specs, options, settings, progress)


def _run_chunk(
    ray: Any,
    context: RunContext,
    pending: list[StudyEntry],
    specs: list[tuple[str, str]],
    options: BatchOptions,
    settings: RayOptions,
    progress: BatchProgress,
) -> None:
    """One pipeline over up to ``CHUNK`` studies: the driver holds only their locators,
    and only they are marked running (what a kill makes the rerun redo)."""
    journal, labeller = context.journal, context.labeller
    journal.mark_running_many(entry.key for entry in pending)
    items = [_item(journal.get(entry.key), labeller.hash(entry.key), options)
             for entry in pending]  # fmt: skip
    committed: set[str] = set()
    dataset = _pipeline(ray, items, specs, context, options, settings)
    try:
        for finished in _finished_batches(dataset):
            fresh = [item for item in finished if item.entry.key not in committed]
            progress.finished(_commit(context, fresh))
            committed.update(item.entry.key for item in fresh)
    except ray.exceptions.RayError as exc:  # e.g. an actor cannot load a plugin
        raise MedplugError(
            f"the ray engine stopped: {_first_line(exc)} (finished studies are "
            "kept: fix the cause and rerun the same command to resume)"
        ) from exc
    lost = [item for item in items if item.entry.key not in committed]
    if lost:
        log.warning("%d studies lost their worker more often than retried", len(lost))
        progress.finished(_commit(context, [_lost(item) for item in lost]))


def _item(entry: StudyEntry, study: str, options: BatchOptions) -> StudyItem:
    found = options.manifest.lookup(entry.key, entry.locator.get("accession"))
    job = LoadJob(
        key=entry.key,
        case_id=study,
        locator=locator_from_json(entry.locator),
        report=found.report,
        clinical=found.clinical,
        rules=options.rules,
        retry=options.retry,
    )
    return StudyItem(entry=entry, study=study, job=job)


def _pipeline(
    ray: Any,
    items: list[StudyItem],
    specs: list[tuple[str, str]],
    context: RunContext,
    options: BatchOptions,
    settings: RayOptions,
) -> Any:
    """decode (tasks) -> inference (actor pool) -> write (tasks), streaming."""
    from ray.data import DataContext, TaskPoolStrategy

    data_context = DataContext.get_current()
    data_context.enable_progress_bars = False  # the driver shows its own (BatchProgress)
    data_context.max_errored_blocks = len(items)  # a lost study becomes its error record
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    rows = [{KEY: item.entry.key, ITEM: _pack(item)} for item in items]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one study per block
    decode_compute = TaskPoolStrategy(size=settings.decode_tasks) if settings.decode_tasks else None
    dataset = dataset.map(
        decode_stage,
        compute=decode_compute,
        num_cpus=settings.task_cpus,
        # Reserved per decode task (a CT volume and its copies); being a resource the
        # actors do not ask for, it also keeps Ray Data from fusing decoding into them.
        memory=settings.decode_memory_mb << 20,
    )
    with warnings.catch_warnings():  # ray_remote_args_fn's deprecation (see _actor_retries)
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = _with_actors(dataset, specs, options, settings)
    return dataset.map(
        write_stage,
        fn_kwargs={"plan": context.processor.plan, "destination": context.processor.destination},
        num_cpus=settings.task_cpus,
    )


def _with_actors(
    dataset: Any, specs: list[tuple[str, str]], options: BatchOptions, settings: RayOptions
) -> Any:
    from ray.data import ActorPoolStrategy

    threads = options.threads or max(1, int(settings.actor_cpus))
    return dataset.map_batches(
        InferenceActor,
        fn_constructor_args=(specs, options.heatmap_format, threads),
        batch_size=options.batch_size,
        compute=ActorPoolStrategy(size=settings.actors, max_tasks_in_flight_per_actor=2),
        num_cpus=settings.actor_cpus,
        num_gpus=settings.actor_gpus or None,
        **_actor_retries(),
    )


def _actor_retries() -> dict[str, Any]:
    """Bound the retries of a batch whose actor died (Ray Data's default: for ever, so a
    study that kills its actor every time would never end). Through ``ray_remote_args_fn``,
    deprecated since Ray 2.51 with no replacement yet; left out where it is gone."""
    from ray.data import Dataset

    if "ray_remote_args_fn" not in inspect.signature(Dataset.map_batches).parameters:
        return {}
    return {"ray_remote_args_fn": _actor_remote_args}


def _actor_remote_args() -> dict[str, Any]:
    return {"max_restarts": -1, "max_task_retries": ACTOR_TASK_RETRIES}


def _finished_batches(dataset: Any) -> Iterator[list[StudyItem]]:
    """Each write task's block as it arrives (one inference batch: one journal commit)."""
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield [_unpack(data) for data in batch[ITEM]]


def _commit(context: RunContext, finished: list[StudyItem]) -> list[dict[str, Any]]:
    """The single writer: a full disk stops the run before anything is committed."""
    outcomes = [item.outcome for item in finished]
    context.processor.stop_if_storage_failed(outcomes, [])  # type: ignore[arg-type]
    return context.processor.commit(outcomes, [item.written for item in finished])  # type: ignore[arg-type]


def _first_line(exc: BaseException) -> str:
    """The root cause's message, not Ray's wrapping traceback."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(cause).__name__


def _lost(item: StudyItem) -> StudyItem:
    error = {
        "stage": "run",
        "reason": "worker-lost",
        "message": "the Ray worker processing this study died on every retry",
    }
    loaded = LoadedStudy(key=item.entry.key, error=error)
    item.outcome = StudyOutcome(loaded, item.entry, errors=[error])
    item.written = WrittenStudy()
    return item


def _alive_nodes(ray: Any) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


class _connected:
    """Join the cluster (or start a private Ray here); leave it as found."""

    def __init__(self, ray: Any, settings: RayOptions, workers: int) -> None:
        self.ray, self.settings, self.workers = ray, settings, workers
        self.started = False

    def __enter__(self) -> _connected:
        ray, settings = self.ray, self.settings
        if ray.is_initialized():  # the caller's own Ray (Python API)
            return self
        common = {"log_to_driver": False, "configure_logging": False}
        if settings.address:
            ray.init(address=settings.address, **common)
        else:
            cpus = max(self.workers, 1) * settings.task_cpus + settings.actors * settings.actor_cpus
            ray.init(
                num_cpus=max(1, round(cpus)),
                include_dashboard=False,
                object_store_memory=(settings.object_store_mb << 20)
                if settings.object_store_mb
                else None,
                _node_ip_address="127.0.0.1",  # a private Ray: nothing listens beyond this host
                **common,
            )
        self.started = True
        log.info("ray: %d nodes, %s", len(_alive_nodes(ray)), ray.cluster_resources())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.started:
            self.ray.shutdown()
