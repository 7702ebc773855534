"""``medplug listen``: a DICOM C-STORE receiver that runs plugins on each study it gets.

Modalities or the PACS send images to our AE title; only calling AE titles
on the allow-list may associate. Instances are spooled to disk as they
arrive (never held in memory), and a study counts as complete once no new
instance has arrived for ``quiet_seconds``. It then goes through the same
journal and ``StudyProcessor`` as ``medplug batch``, and the SR is sent on
to ``--forward-to``. Spool and journal live in the output folder, so a
restarted listener finishes studies that were received but not processed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from medplug.batch.context import RunContext
from medplug.batch.destinations import Destination
from medplug.batch.loading import LoadJob, load_study
from medplug.batch.locators import FolderLocator, locator_from_json
from medplug.batch.manifest import Manifest
from medplug.batch.processing import ProcessorSettings
from medplug.contract import Plugin
from medplug.errors import MedplugError
from medplug.safe_paths import UnsafePathError, inside, is_dicom_uid

log = logging.getLogger("medplug.batch")


@dataclass
class ListenerOptions:
    ae_title: str
    port: int
    allowed_aets: list[str]
    out_dir: Path
    host: str = "127.0.0.1"
    quiet_seconds: float = 5.0
    manifest: Manifest = field(default_factory=Manifest.empty)
    rules: dict | None = None
    deidentify: bool = False
    pseudonym_map: Path | None = None
    show_identifiers: bool = False
    heatmap_format: str = "pm"  # pm (Parametric Map), sc (Secondary Capture) or none


class StudyListener:
    """The SCP plus the thread that processes studies once they have gone quiet."""

    def __init__(
        self,
        plugins: Sequence[Plugin],
        options: ListenerOptions,
        destination: Destination | None = None,
    ) -> None:
        if not options.allowed_aets:
            raise MedplugError("medplug listen needs at least one --allow AE title")
        self.options = options
        self.context = RunContext.open(
            options,
            plugins,
            ProcessorSettings(
                deidentify=options.deidentify,
                heatmap_format=options.heatmap_format,
                source_kind="dimse",
                push_deidentified=options.deidentify,
            ),
            destination,
        )
        self.output, self.journal = self.context.output, self.context.journal
        self.labeller, self.processor = self.context.labeller, self.context.processor
        self.spool = self.output.root / "spool"
        self.spool.mkdir(exist_ok=True)
        self._last_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------ receiving

    def _on_store(self, event: evt.Event) -> int:
        """Spool one instance to disk; the study's quiet timer restarts.

        The sender chooses every byte, UIDs included, and an allowed AE title
        proves nothing (it is self-declared): an instance whose study or SOP
        instance UID is not a DICOM UID is refused, and the spool file name is
        checked to stay inside the study's spool folder.
        """
        try:
            dataset = event.dataset
            study_uid = str(dataset.StudyInstanceUID)
            sop_uid = str(dataset.SOPInstanceUID)
        except Exception:
            return 0xC210  # cannot understand
        if not (is_dicom_uid(study_uid) and is_dicom_uid(sop_uid)):
            log.warning("refused an instance whose Study or SOP Instance UID is not a DICOM UID")
            return 0xC211  # cannot understand: the UIDs are not UIDs
        folder = self.spool / self.labeller.hash(study_uid)
        folder.mkdir(exist_ok=True)
        try:
            partial = inside(folder, f"{sop_uid}.partial")
            final = inside(folder, f"{sop_uid}.dcm")
        except UnsafePathError:
            log.warning("refused an instance whose spool file name would leave the spool")
            return 0xC211
        partial.write_bytes(event.encoded_dataset(include_meta=True))
        partial.rename(final)
        with self._lock:
            if study_uid not in self._last_seen:
                self.journal.add_or_reopen(study_uid, FolderLocator(str(folder)).to_json())
            self._last_seen[study_uid] = time.monotonic()
        return 0x0000

    def start(self) -> None:
        ae = AE(ae_title=self.options.ae_title)
        for context in AllStoragePresentationContexts:  # compressed series too (JPEG, RLE...)
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.require_calling_aet = list(self.options.allowed_aets)
        self._server = ae.start_server(
            (self.options.host, self.options.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        # Studies received before a restart but never processed are finished first.
        for entry in self.journal.pending_or_interrupted():
            with self._lock:
                self._last_seen.setdefault(entry.key, 0.0)
        self._worker = threading.Thread(target=self._process_loop, daemon=True)
        self._worker.start()
        log.info(
            "listening as %s on %s:%d", self.options.ae_title, self.options.host, self.options.port
        )

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)
        self.output.rewrite_results(self.journal.records())
        self.output.write_summary(self.journal.records())
        self.context.close()

    # ------------------------------------------------------------------ processing

    def _quiet_studies(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            quiet = [
                uid
                for uid, seen in self._last_seen.items()
                if now - seen >= self.options.quiet_seconds
            ]
            for uid in quiet:
                del self._last_seen[uid]
        return quiet

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            for study_uid in self._quiet_studies():
                self.process_study(study_uid)
            self._stop.wait(0.25)

    def process_study(self, study_uid: str) -> None:
        entry = self.journal.claim_identity(study_uid)
        found = self.options.manifest.lookup(study_uid, None)
        job = LoadJob(
            key=study_uid,
            case_id=self.labeller.hash(study_uid),
            locator=locator_from_json(entry.locator),
            report=found.report,
            clinical=found.clinical,
            rules=self.options.rules,
            spool_dir=str(self.spool),
        )
        self.journal.mark_running(study_uid)
        loaded = load_study(job)
        if not found.report and loaded.case is not None and loaded.evidence:
            accession = str(loaded.evidence.reference.get("AccessionNumber", "") or "")
            found = self.options.manifest.lookup(study_uid, accession)
            loaded.case.report, loaded.case.clinical = found.report, found.clinical
        self.processor.process([loaded])
        shutil.rmtree(entry.locator["path"], ignore_errors=True)
