"""``medplug batch``: studies decoded in worker processes -> batched inference -> writer thread.

Three stages overlap: worker processes decode the next studies, the main
thread runs the plugins' ``predict_batch`` on the current batch, and a writer
thread has the previous batch's SRs and SCs built and written (by the same
worker processes, so highdicom's Python never competes with inference for the
GIL), pushes them and commits them to the journal. Every stage is bounded
(decoding ``max(2 * workers, batch_size)`` studies ahead, two batches waiting
for the writer), so memory stays flat whatever the number of studies. The
journal is opened first and consulted for every study, so the same command
rerun after a crash continues where it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medplug.batch.context import (  # noqa: F401  (JOURNAL_NAME & co: their old home)
    JOURNAL_NAME,
    RunContext,
    default_pseudonym_map,
    plugin_settings,
)
from medplug.batch.destinations import Destination
from medplug.batch.dicomweb import RetryPolicy
from medplug.batch.journal import Journal
from medplug.batch.lifetime import exit_with
from medplug.batch.loading import LoadedStudy, LoadJob, error_info, load_study
from medplug.batch.locators import locator_from_json
from medplug.batch.manifest import Manifest
from medplug.batch.memory import HeapTrimmer
from medplug.batch.processing import ProcessorSettings
from medplug.batch.progress import BatchProgress
from medplug.batch.ray_options import RayOptions
from medplug.batch.spool import run_spool_folder
from medplug.batch.spooled_arrays import discard_spooled, restore_images
from medplug.batch.storage import OutputStorageError, stop_error, storage_problem
from medplug.batch.studies import Discovery
from medplug.batch.writer import OutputWriter
from medplug.contract import Plugin
from medplug.errors import MedplugError

log = logging.getLogger("medplug.batch")
ENGINES = ("local", "ray")


@dataclass
class BatchOptions:
    """Everything ``medplug batch`` was asked to do, besides which studies."""

    out_dir: Path
    workers: int = 2
    batch_size: int = 8
    rules: dict[str, Any] | None = None
    manifest: Manifest = field(default_factory=Manifest.empty)
    deidentify: bool = False
    pseudonym_map: Path | None = None
    heatmap_format: str = "pm"  # pm (Parametric Map), sc (Secondary Capture) or none
    write_fhir: bool = True  # fhir/<study>.json, a FHIR R4 DiagnosticReport per study
    show_identifiers: bool = False
    retry_errors: bool = False
    source_kind: str = "folder"
    progress: bool = True
    threads: int | None = None  # torch threads for inference; None: cores left by the workers
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # DICOMweb fetches (and pushes)
    search_retries: int = 0  # network retries the study search needed, for the summary
    engine: str = "local"  # local: this machine's process pool; ray: a Ray cluster
    ray: RayOptions | None = None  # engine="ray": where the cluster is, actor sizes


@dataclass
class RunSummary:
    """How the run went: studies per journal state, and how often the network failed.

    ``retried_studies``/``retries`` cover every finished study's last attempt
    (fetch and push), read back from the journal, so a resumed run counts too.
    """

    counts: dict[str, int]
    retried_studies: int = 0
    retries: int = 0
    search_retries: int = 0

    @classmethod
    def from_records(
        cls, counts: dict[str, int], records: Iterator[dict[str, Any]], search_retries: int
    ) -> RunSummary:
        spent = [r.get("provenance", {}).get("network_retries", 0) or 0 for r in records]
        return cls(dict(counts), sum(1 for n in spent if n), sum(spent), search_retries)

    def to_json(self) -> dict[str, Any]:
        return {
            "studies": sum(self.counts.values()),
            "done": self.counts.get("done", 0),
            "failed": self.counts.get("error", 0),
            "retried_studies": self.retried_studies,
            "retries": self.retries,
            "search_retries": self.search_retries,
        }


def run_batch(
    discovery: Discovery,
    plugins: Sequence[Plugin],
    options: BatchOptions,
    destination: Destination | None = None,
    pool: Executor | None = None,
) -> RunSummary:
    """Run every study of ``discovery`` not already finished; returns the summary.

    ``pool``: worker processes the caller already started (``worker_pool``), e.g.
    for discovery; by default the run starts ``options.workers`` of its own.
    A full or unwritable output disk stops the run with ``OutputStorageError``
    (what was committed stays; a rerun resumes). ``options.engine="ray"`` runs the
    same stages on a Ray cluster (``ray_engine``); ``pool`` is then not used.
    """
    check_engine(options.engine)
    try:
        return _run_batch(discovery, plugins, options, destination, pool)
    except OutputStorageError:
        raise
    except (OSError, sqlite3.Error) as exc:
        problem = storage_problem(exc)
        if problem is None:
            raise
        raise stop_error(options.out_dir, *problem) from exc


def check_engine(engine: str) -> None:
    """An unknown engine, or ``ray`` without Ray installed, is one clear error up front."""
    if engine not in ENGINES:
        raise MedplugError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        from medplug.batch.ray_engine import require_ray

        require_ray()


def _run_batch(
    discovery: Discovery,
    plugins: Sequence[Plugin],
    options: BatchOptions,
    destination: Destination | None,
    pool: Executor | None,
) -> RunSummary:
    context = RunContext.open(
        options,
        plugins,
        ProcessorSettings(
            heatmap_format=options.heatmap_format,
            write_fhir=options.write_fhir,
            deidentify=options.deidentify,
            source_kind=options.source_kind,
            stop_on_storage_errors=True,
        ),
        destination,
    )
    journal, output = context.journal, context.output
    try:
        journal.add_many((task.study_uid, task.journal_locator()) for task in discovery.studies)
        requeued = journal.requeue_interrupted(options.retry_errors)
        if requeued:
            log.info("resuming: %d interrupted studies requeued", requeued)
        output.rewrite_results(journal.records())
        if options.engine == "ray":
            from medplug.batch.ray_engine import run_on_ray

            run_on_ray(context, plugins, options)
        else:
            _run_local(context, options, pool)
        output.rewrite_results(journal.records())
        output.write_summary(journal.records())
        summary = RunSummary.from_records(
            journal.counts(), journal.records(), options.search_retries
        )
        output.write_run_summary(summary.to_json())
        return summary
    finally:
        context.close()


def _run_local(context: RunContext, options: BatchOptions, pool: Executor | None) -> None:
    """This machine's engine: decoding processes, inference here, a writer thread."""
    journal, processor, labeller = context.journal, context.processor, context.labeller
    pending = journal.pending()
    total = sum(journal.counts().values())
    with (
        inference_threads(options.threads, options.workers),
        BatchProgress(options.progress, total, total - len(pending)) as progress,
        run_spool_folder() as spool,
        _given_or_own_pool(pool, options.workers) as pool,
    ):
        processor.output_pool = pool
        processor.array_dir = spool if pool is not None else None
        trimmer = HeapTrimmer()
        jobs = (
            LoadJob(
                key=entry.key,
                case_id=labeller.hash(entry.key),
                locator=locator_from_json(entry.locator),
                report=(
                    found := options.manifest.lookup(entry.key, entry.locator.get("accession"))
                ).report,
                clinical=found.clinical,
                rules=options.rules,
                spool_dir=spool,
                array_dir=spool if pool is not None else None,
                retry=options.retry,
            )  # fmt: skip
            for entry in pending
        )
        with OutputWriter(processor, progress.finished) as writer:
            for ready in decoded_batches(
                jobs, journal, pool, options.batch_size, in_flight=2 * options.workers
            ):
                writer.submit(processor.predict(ready))
                trimmer.after_batch()  # this batch's arrays are released by now


@contextlib.contextmanager
def inference_threads(threads: int | None, workers: int) -> Iterator[int]:
    """Give torch the cores the worker processes leave free (at least one) for the run.

    Torch's default (one thread per core) oversubscribes the CPU once the
    workers decode and write: its threads then wait on each other at every
    operator; a small model's forward pass was measured 25x slower that way.
    """
    import torch

    from medplug.threads import apply_thread_policy

    before = torch.get_num_threads()
    threads = apply_thread_policy(requested=threads, reserved=workers)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """The processes that decode studies and write their DICOM outputs (None: in-process)."""
    if workers <= 0:
        yield None
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_worker_context(),
        initializer=exit_with,  # a killed run takes its workers with it (lifetime)
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a stopping run waits only for work begun
        raise
    pool.shutdown(wait=True)


def _given_or_own_pool(
    pool: Executor | None, workers: int
) -> contextlib.AbstractContextManager[Executor | None]:
    return contextlib.nullcontext(pool) if pool is not None else worker_pool(workers)


def decoded_batches(
    jobs: Iterator[LoadJob],
    journal: Journal,
    pool: Executor | None,
    batch_size: int,
    in_flight: int = 4,
) -> Iterator[list[LoadedStudy]]:
    """Decode studies in ``pool``, yielding batches of up to ``batch_size``.

    Bounded: never more than ``max(in_flight, batch_size)`` studies in flight
    plus one batch waiting, so memory does not grow with the number of
    studies; enough in flight that the workers keep decoding while a batch is
    predicted.
    """
    if pool is None:  # in-process, for debugging and tiny runs
        ready: list[LoadedStudy] = []
        for job in jobs:
            journal.mark_running(job.key)
            ready.append(load_study(job))
            if len(ready) >= batch_size:
                yield ready
                ready = []
        if ready:
            yield ready
        return
    limit = max(in_flight, batch_size)
    futures: dict[Future[LoadedStudy], LoadJob] = {}
    ready = []
    exhausted = False
    while futures or not exhausted:
        starting = list(itertools.islice(jobs, limit - len(futures)))
        exhausted = exhausted or len(starting) < limit - len(futures)
        journal.mark_running_many(job.key for job in starting)  # one commit for all
        for job in starting:
            futures[pool.submit(load_study, job)] = job
        if not futures:
            break
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        for future in done:
            ready.append(_result_or_error(future, futures.pop(future)))
        if len(ready) >= batch_size or (exhausted and not futures):
            yield ready
            ready = []
    if ready:
        yield ready


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork decoders from a small server process that has imported only the decoding code.

    Neither torch nor the plugins end up in the workers (``fork`` from this
    process would copy them, and is unsafe with its threads); ``spawn`` is the
    fallback where there is no fork server.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["medplug.batch.worker_preload"])
        return context
    return multiprocessing.get_context("spawn")


def _result_or_error(future: Future[LoadedStudy], job: LoadJob) -> LoadedStudy:
    """A worker that died (out of memory, crash in a decoder) fails only its study."""
    try:
        loaded = future.result()
    except Exception as exc:
        return LoadedStudy(key=job.key, error=error_info("load", exc))
    if loaded.case is not None and loaded.spooled:
        try:
            restore_images(loaded.case, loaded.spooled)
        except Exception as exc:  # the worker's file is gone or unreadable
            discard_spooled(loaded.spooled)
            return LoadedStudy(key=job.key, error=error_info("load", exc))
    return loaded
