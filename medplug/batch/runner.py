"""``medplug batch``: discovered studies -> decoded in worker processes -> batched inference.

Memory stays flat because at most ``2 * workers + batch_size`` studies are
decoded and waiting at any time, whatever the size of the batch. The journal
is opened first and consulted for every study, so the same command rerun
after a crash continues where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from medplug.batch.deidentify import PseudonymMap
from medplug.batch.destinations import Destination
from medplug.batch.identifiers import StudyLabeller
from medplug.batch.journal import Journal
from medplug.batch.loading import LoadedStudy, LoadJob, error_info, load_study
from medplug.batch.manifest import Manifest
from medplug.batch.outputs import OutputFolder
from medplug.batch.processing import ProcessorSettings, StudyProcessor
from medplug.batch.studies import Discovery
from medplug.contract import Plugin

log = logging.getLogger("medplug.batch")
JOURNAL_NAME = "journal.sqlite"


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
    write_heatmaps: bool = True
    show_identifiers: bool = False
    retry_errors: bool = False
    source_kind: str = "folder"
    progress: bool = True


class StudiesPerSecondColumn(ProgressColumn):
    """Throughput, the figure a PACS administrator sizes a box by."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} studies/s" if speed else "- studies/s", style="cyan")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        StudiesPerSecondColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def plugin_settings(plugins: Sequence[Plugin]) -> list[dict[str, str]]:
    return [{"name": p.info.name, "version": p.info.version} for p in plugins]


def run_batch(
    discovery: Discovery,
    plugins: Sequence[Plugin],
    options: BatchOptions,
    destination: Destination | None = None,
) -> dict[str, int]:
    """Run every study of ``discovery`` not already finished; returns the state counts."""
    output = OutputFolder(options.out_dir)
    journal = Journal(output.root / JOURNAL_NAME)
    pseudonyms = None
    try:
        journal.check_settings(
            {"plugins": plugin_settings(plugins), "deidentify": options.deidentify}
        )
        labeller = StudyLabeller(journal.secret(), options.show_identifiers)
        for task in discovery.studies:
            journal.add(task.study_uid, task.locator | {"accession": task.accession})
        requeued = journal.requeue_interrupted(options.retry_errors)
        if requeued:
            log.info("resuming: %d interrupted studies requeued", requeued)
        output.rewrite_results(journal.records())
        if options.deidentify:
            pseudonyms = PseudonymMap(options.pseudonym_map or default_pseudonym_map())
        processor = StudyProcessor(
            plugins,
            journal,
            output,
            labeller,
            ProcessorSettings(
                write_heatmaps=options.write_heatmaps,
                deidentify=options.deidentify,
                source_kind=options.source_kind,
            ),
            destination=destination,
            pseudonyms=pseudonyms,
        )
        pending = journal.pending()
        counts = journal.counts()
        total = sum(counts.values())
        with (
            _progress(options.progress) as progress,
            tempfile.TemporaryDirectory(prefix="medplug-spool-") as spool,
        ):
            bar = progress.add_task("studies", total=total, completed=total - len(pending))
            jobs = (
                LoadJob(
                    key=entry.key,
                    case_id=labeller.hash(entry.key),
                    locator=entry.locator,
                    report=(
                        found := options.manifest.lookup(entry.key, entry.locator.get("accession"))
                    ).report,
                    clinical=found.clinical,
                    rules=options.rules,
                    spool_dir=spool,
                )  # fmt: skip
                for entry in pending
            )
            for ready in decoded_batches(jobs, journal, options.workers, options.batch_size):
                processor.process(ready)
                progress.advance(bar, len(ready))
        output.rewrite_results(journal.records())
        output.write_summary(journal.records())
        return journal.counts()
    finally:
        journal.close()
        if pseudonyms is not None:
            pseudonyms.close()


def decoded_batches(
    jobs: Iterator[LoadJob], journal: Journal, workers: int, batch_size: int
) -> Iterator[list[LoadedStudy]]:
    """Decode studies in ``workers`` processes, yielding batches of up to ``batch_size``.

    Bounded: never more than ``2 * workers`` studies in flight plus one batch
    waiting, so memory does not grow with the number of studies.
    """
    if workers <= 0:  # in-process, for debugging and tiny runs
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
    context = multiprocessing.get_context("spawn")
    limit = 2 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        in_flight: dict[Future[LoadedStudy], LoadJob] = {}
        ready = []
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < limit:
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                journal.mark_running(job.key)
                in_flight[pool.submit(load_study, job)] = job
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                ready.append(_result_or_error(future, in_flight.pop(future)))
            if len(ready) >= batch_size or (exhausted and not in_flight):
                yield ready
                ready = []
        if ready:
            yield ready


def _result_or_error(future: Future[LoadedStudy], job: LoadJob) -> LoadedStudy:
    """A worker that died (out of memory, crash in a decoder) fails only its study."""
    try:
        return future.result()
    except Exception as exc:
        return LoadedStudy(key=job.key, error=error_info("load", exc))


def default_pseudonym_map() -> Path:
    """Kept on this machine, outside any output folder that may be shared."""
    return Path.home() / ".local" / "share" / "medplug" / "pseudonyms.sqlite"
