"""From decoded studies to finished records: inference, SR, heatmaps, push, journal.

Shared by ``medplug batch`` and ``medplug listen``: both hand a list of
``LoadedStudy`` to ``StudyProcessor.process``. Inference runs through each
plugin's ``predict_batch``; if a batch call fails, the studies are retried
one by one so only the bad study gets the error. Every study ends as one
journal record, ``ok``, ``partial`` (some plugins failed) or ``error``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import medplug
from medplug.batch.destinations import Destination
from medplug.batch.identifiers import StudyLabeller
from medplug.batch.journal import Journal, StudyEntry
from medplug.batch.loading import LoadedStudy, error_info
from medplug.batch.outputs import OutputFolder
from medplug.batch.spooled_arrays import MIN_SPOOLED_BYTES
from medplug.batch.storage import STORAGE_REASONS, stop_error
from medplug.contract import Case, Plugin, Prediction
from medplug.dicom_out.deidentify import (
    PseudonymMap,
    deidentify_provenance,
    scrub_token_attributions,
)
from medplug.dicom_out.grid import GeometryMismatchError, check_frames_match, on_image_grid
from medplug.dicom_out.heatmap_sc import peak_slice
from medplug.dicom_out.job import DicomOutputJob, DicomOutputResult, write_dicom_outputs
from medplug.dicom_out.sr import SrIdentity
from medplug.errors import MedplugError
from medplug.phi import scrub

log = logging.getLogger("medplug.batch")


@dataclass
class ProcessorSettings:
    """What to do with results besides the JSON line."""

    write_sr: bool = True
    heatmap_format: str = "pm"  # pm (Parametric Map), sc (Secondary Capture) or none
    write_fhir: bool = True
    deidentify: bool = False
    source_kind: str = "folder"
    push_deidentified: bool = False  # listener forwarding out of the hospital
    # A full or unwritable output disk stops the run (``storage``) instead of failing
    # every study after it; the batch runner sets it.
    stop_on_storage_errors: bool = False


@dataclass
class StudyOutcome:
    """Per-study scratch space while a batch is being finished."""

    loaded: LoadedStudy
    entry: StudyEntry
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    predict_s: float = 0.0
    series_uid: str | None = None
    spacing: tuple[float, ...] = ()  # of the image read, for segment volumes
    heatmaps: dict[str, np.ndarray | str] = field(default_factory=dict)
    heatmap_slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    push_retries: int = 0

    def release_pixels(self, heatmap_format: str, array_dir: str | None = None) -> None:
        """Keep what the writer needs, drop the arrays.

        A decoded CT is hundreds of MB and so is a heatmap over it; the batches
        waiting for the writer must not hold them, or memory grows with the queue.
        For a Parametric Map (``pm``) each heatmap is resampled onto the source
        grid and, given ``array_dir``, spooled to a ``.npy`` the writer maps and
        deletes; for a Secondary Capture (``sc``) only the peak slice is kept. A
        source a map cannot be registered to (no Frame of Reference, a multi-frame
        image) gets the Secondary Capture instead.
        Label maps shrink to the smallest integer type that holds them.
        Embeddings were for the plugins run after (fusion); outputs never carry them.
        """
        for prediction in self.predictions:
            prediction.embedding = None
            if prediction.segmentation is not None:
                prediction.segmentation.label_map = compact_labels(
                    prediction.segmentation.label_map
                )
        case = self.loaded.case
        if case is not None and case.image is not None:
            self.series_uid = case.image.series_uid
            self.spacing = case.image.spacing
            for prediction in self.predictions:
                explanation = prediction.explanation
                if explanation is None or explanation.heatmap is None:
                    continue
                try:
                    if heatmap_format == "pm" and not self._fits_source(case.image.array.shape):
                        heatmap_format = "sc"  # a radiograph without patient geometry, say
                    if heatmap_format == "pm":
                        heat = on_image_grid(prediction, case.image)
                        self.heatmaps[prediction.plugin] = spool_array(
                            heat, array_dir, f"{self.entry.key}-{prediction.plugin}"
                        )
                    elif heatmap_format == "sc":
                        heat = on_image_grid(prediction, case.image)
                        self.heatmap_slices[prediction.plugin] = peak_slice(case.image.array, heat)
                except (ValueError, MedplugError) as exc:  # no map; the SR still can be
                    error = error_info("output", exc) | {"plugin": prediction.plugin}
                    self.errors.append(error)
                explanation.heatmap = None
                explanation.heatmap_affine = None
        self.loaded.case = None

    def _fits_source(self, shape: tuple[int, ...]) -> bool:
        """Whether a map of ``shape`` can be a Parametric Map on the source's slices."""
        if self.loaded.evidence is None:
            return False
        try:
            check_frames_match(self.loaded.evidence, shape)
        except GeometryMismatchError:
            return False
        return True


def compact_labels(label_map: np.ndarray) -> np.ndarray:
    """The label map as uint8 (or uint16, int32) when its values fit: 1/8 of int64."""
    label_map = np.asarray(label_map)
    high = int(label_map.max()) if label_map.size else 0
    low = int(label_map.min()) if label_map.size else 0
    for dtype in (np.uint8, np.uint16):
        if low >= 0 and high <= np.iinfo(dtype).max:
            return label_map.astype(dtype, copy=False)
    return label_map.astype(np.int32, copy=False)


def spool_array(array: np.ndarray, folder: str | None, stem: str) -> np.ndarray | str:
    """A large array as a ``.npy`` in ``folder`` (its path), else the array itself."""
    if folder is None or array.nbytes < MIN_SPOOLED_BYTES:
        return array
    path = Path(folder) / f"{hashlib.sha1(stem.encode()).hexdigest()[:16]}-heatmap.npy"
    np.save(path, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return str(path)


def run_plugins(plugins: Sequence[Plugin], outcomes: list[StudyOutcome]) -> None:
    """Each plugin's ``predict_batch`` over the decoded cases; isolate failures."""
    for plugin in plugins:
        ready = [o for o in outcomes if o.loaded.case is not None]
        if not ready:
            return
        started = time.perf_counter()
        cases: list[Case] = [o.loaded.case for o in ready]  # type: ignore[misc]
        try:
            predictions: list[Prediction | BaseException] = list(plugin.predict_batch(cases))
            if len(predictions) != len(cases):
                raise RuntimeError("predict_batch returned a different number of predictions")
        except Exception:
            predictions = []
            for case in cases:
                try:
                    predictions.append(plugin.predict(case))
                except Exception as exc:  # the bad study gets the error, the rest go on
                    predictions.append(exc)
        kept = [
            (c, p) for c, p in zip(cases, predictions, strict=True) if isinstance(p, Prediction)
        ]
        plugin.keep_embeddings([case for case, _ in kept], [p for _, p in kept])
        share = (time.perf_counter() - started) / len(ready)
        for outcome, result in zip(ready, predictions, strict=True):
            outcome.predict_s += share
            if isinstance(result, BaseException):
                outcome.errors.append(error_info("predict", result) | {"plugin": plugin.name})
            elif result.error is not None:  # the plugin isolated this case's failure itself
                reason = {"reason": result.error["type"], "message": result.error["message"]}
                outcome.errors.append({"stage": "predict", "plugin": plugin.name, **reason})
            else:
                outcome.predictions.append(result)


def segmentation_summary(prediction: Prediction, spacing: tuple[float, ...]) -> list[dict]:
    """Each segment of the prediction's mask: value, label, codes and volume in mL."""
    segmentation = prediction.segmentation
    assert segmentation is not None
    return [
        {
            "value": segment.value,
            "label": segment.label,
            "category": segment.category.meaning,
            "type": segment.type.meaning,
            "volume_ml": round(segmentation.volume_ml(segment, spacing), 4) if spacing else None,
        }
        for segment in segmentation.segments
    ]


def predict_outcomes(
    plugins: Sequence[Plugin],
    outcomes: list[StudyOutcome],
    heatmap_format: str,
    array_dir: str | None = None,
) -> list[StudyOutcome]:
    """The inference stage of both engines: every plugin over the decoded studies, then
    the pixels dropped (what the writer needs kept). Runs where the plugins live: the
    batch's main process, or a Ray inference actor."""
    for outcome in outcomes:
        if outcome.loaded.error:
            outcome.errors.append(outcome.loaded.error)
    run_plugins(plugins, outcomes)
    for outcome in outcomes:
        outcome.release_pixels(heatmap_format, array_dir)
    return outcomes


@dataclass
class OutputPlan:
    """What every study's DICOM outputs need besides the study (picklable: a Ray write
    task gets it). The push itself is the caller's (``deliver``)."""

    output_root: Path
    write_sr: bool = True
    write_fhir: bool = True
    push: str = "none"  # which copies ``write_dicom_outputs`` returns: none, original, deidentified
    pseudonym_map: Path | None = None


def output_job(outcome: StudyOutcome, study: str, plan: OutputPlan) -> DicomOutputJob | None:
    """What the study's SR and SCs need, or None when there is nothing to write."""
    if not outcome.predictions or not outcome.loaded.evidence:
        return None
    entry = outcome.entry
    return DicomOutputJob(
        study=study,
        predictions=outcome.predictions,
        evidence=outcome.loaded.evidence,
        output_root=plan.output_root,
        sr_identity=SrIdentity(entry.sr_series_uid, entry.sr_sop_uid) if plan.write_sr else None,
        sc_series_uid=entry.sc_series_uid,
        sc_sop_seed=entry.sc_sop_uid,
        heatmaps=outcome.heatmaps,
        heatmap_slices=outcome.heatmap_slices,
        pseudonym_map=plan.pseudonym_map,
        push=plan.push,
        write_fhir=plan.write_fhir,
    )


@dataclass
class WrittenStudy:
    """A study's outputs once written and pushed: what its record cites."""

    files: dict[str, str] = field(default_factory=dict)
    pushed: str | None = None  # the destination's description, when the push succeeded
    write_s: float = 0.0


def deliver(
    outcome: StudyOutcome, written: DicomOutputResult | None, destination: Destination | None
) -> WrittenStudy:
    """Push what was written; a failed write or push becomes this study's error only."""
    started = time.perf_counter()
    done = WrittenStudy()
    if written is not None:
        done.files = written.files
        outcome.errors.extend(written.object_errors)
        if written.error is not None:
            outcome.errors.append(written.error)
        elif destination is not None:
            try:
                outcome.push_retries = destination.send(written.to_push) or 0
                done.pushed = destination.description
            except Exception as exc:  # a failed push is this study's error only
                outcome.push_retries = getattr(exc, "retries", 0)
                outcome.errors.append(error_info("output", exc))
    done.write_s = (written.elapsed_s if written else 0.0) + time.perf_counter() - started
    return done


class StudyProcessor:
    """Turns predictions into outputs and journal records for one output folder."""

    def __init__(
        self,
        plugins: Sequence[Plugin],
        journal: Journal,
        output: OutputFolder,
        labeller: StudyLabeller,
        settings: ProcessorSettings,
        destination: Destination | None = None,
        pseudonyms: PseudonymMap | None = None,
        output_pool: Executor | None = None,
        array_dir: str | None = None,
    ) -> None:
        """``output_pool``: processes that build and write the DICOM objects (else inline).
        ``array_dir``: where heatmaps wait for the writer as files (else in memory)."""
        if settings.deidentify and pseudonyms is None:
            raise ValueError("de-identification needs a pseudonym map")
        self.plugins = list(plugins)
        self.journal = journal
        self.output = output
        self.labeller = labeller
        self.settings = settings
        self.destination = destination
        self.pseudonyms = pseudonyms
        self.output_pool = output_pool
        self.array_dir = array_dir

    def process(self, loaded: Sequence[LoadedStudy]) -> list[dict[str, Any]]:
        """Predict, write and record every study in ``loaded``; returns their records."""
        return self.finish(self.predict(loaded))

    def predict(self, loaded: Sequence[LoadedStudy]) -> list[StudyOutcome]:
        """Every plugin over the decoded studies (one ``predict_batch`` call each)."""
        outcomes = [StudyOutcome(item, self.journal.get(item.key)) for item in loaded]
        return predict_outcomes(
            self.plugins, outcomes, self.settings.heatmap_format, self.array_dir
        )

    @property
    def plan(self) -> OutputPlan:
        """The output settings as a picklable plan (the write stage may run elsewhere)."""
        settings = self.settings
        push = "none"
        if self.destination is not None:
            push = "deidentified" if settings.push_deidentified else "original"
        return OutputPlan(
            output_root=self.output.root,
            write_sr=settings.write_sr,
            write_fhir=settings.write_fhir,
            push=push,
            pseudonym_map=self.pseudonyms.path if settings.deidentify and self.pseudonyms else None,
        )

    def finish(self, outcomes: Sequence[StudyOutcome]) -> list[dict[str, Any]]:
        """SR, heatmaps and push per study, then all records in one journal commit.

        The files are written before the commit: a study killed in between is
        redone with the same SR UIDs, so it still appears exactly once.
        """
        plan = self.plan
        jobs = [output_job(o, self.labeller.hash(o.entry.key), plan) for o in outcomes]
        if self.output_pool is not None:
            futures = [
                self.output_pool.submit(write_dicom_outputs, job) if job else None for job in jobs
            ]
            written = [future.result() if future else None for future in futures]
        else:
            written = [write_dicom_outputs(job) if job else None for job in jobs]
        if self.settings.stop_on_storage_errors:
            self.stop_if_storage_failed(outcomes, written)
        # Pushed from this process: one connection for the run.
        delivered = [
            deliver(outcome, result, self.destination)
            for outcome, result in zip(outcomes, written, strict=True)
        ]
        return self.commit(outcomes, delivered)

    def commit(
        self, outcomes: Sequence[StudyOutcome], written: Sequence[WrittenStudy]
    ) -> list[dict[str, Any]]:
        """Records of written studies, committed to the journal in one transaction.

        The journal's single writer: the batch's main process, whichever engine ran the
        stages before.
        """
        records = [
            self._record(outcome, self.labeller.hash(outcome.entry.key), done)
            for outcome, done in zip(outcomes, written, strict=True)
        ]
        self.journal.finish_many((o.entry.key, r) for o, r in zip(outcomes, records, strict=True))
        self.output.append_results(records)
        for outcome, record in zip(outcomes, records, strict=True):
            self._log(outcome, record)
        return records

    def stop_if_storage_failed(
        self, outcomes: Sequence[StudyOutcome], written: Sequence[DicomOutputResult | None]
    ) -> None:
        """Raise before anything is committed: these studies stay to be redone on resume."""
        errors = [error for outcome in outcomes for error in outcome.errors]
        errors += [result.error for result in written if result is not None and result.error]
        for error in errors:
            if error["reason"] in STORAGE_REASONS:
                raise stop_error(self.output.root, error["reason"], error["message"])

    def _log(self, outcome: StudyOutcome, record: dict[str, Any]) -> None:
        for error in outcome.errors:
            log.warning(
                "%s: %s failed (%s)",
                self.labeller.for_log(outcome.entry.key),
                error.get("plugin") or error["stage"],
                error["reason"],
            )
        retries = record["provenance"]["network_retries"]
        log.info(
            "%s: %s%s",
            self.labeller.for_log(outcome.entry.key),
            record["status"],
            f" after {retries} network retries" if retries else "",
        )

    def _record(self, outcome: StudyOutcome, study: str, done: WrittenStudy) -> dict[str, Any]:
        status = (
            "ok"
            if outcome.predictions and not outcome.errors
            else "partial"
            if outcome.predictions
            else "error"
        )
        study_uid, accession = outcome.entry.key, outcome.entry.locator.get("accession")
        series_uid = outcome.series_uid
        if self.settings.deidentify:
            assert self.pseudonyms is not None
            study_uid = self.pseudonyms.pseudonym("uid", study_uid)
            series_uid = self.pseudonyms.pseudonym("uid", series_uid) if series_uid else None
            accession = None
        load_s, write_s = outcome.loaded.load_s, done.write_s
        return {
            "study": study,
            "study_uid": study_uid,
            "accession": accession,
            "status": status,
            "results": [self._result(p, outcome.spacing) for p in outcome.predictions],
            "errors": outcome.errors,
            "timing": {
                "load_s": round(load_s, 4),
                "predict_s": round(outcome.predict_s, 4),
                "write_s": round(write_s, 4),
                "total_s": round(load_s + outcome.predict_s + write_s, 4),
            },
            "provenance": {
                "medplug_version": medplug.__version__
                if hasattr(medplug, "__version__")
                else "unknown",
                "source": self.settings.source_kind,
                "series_uid": series_uid,
                "instances": len(outcome.loaded.evidence or ()),
                "files": done.files,
                "pushed_to": done.pushed,
                "attempt": outcome.entry.attempts,
                "network_retries": outcome.loaded.retries + outcome.push_retries,
                "deidentified": self.settings.deidentify,
            },
        }

    def _result(self, prediction: Prediction, spacing: tuple[float, ...]) -> dict[str, Any]:
        """The prediction as JSON, without arrays (heatmaps go to SC files)."""
        data = prediction.to_json()
        data.pop("embedding", None)
        explanation = data.get("explanation") or {}
        explanation.pop("heatmap", None)
        explanation.pop("heatmap_affine", None)
        segmentation = data.pop("segmentation", None)
        if segmentation is not None and prediction.segmentation is not None:
            # the mask is in the SEG; the record says which segments and their volumes
            data["outputs"] = dict(data.get("outputs") or {}) | {
                "segments": segmentation_summary(prediction, spacing)
            }
        if self.settings.deidentify and explanation.get("token_attributions"):
            # report words may identify the patient: PHI-like ones become XXXX
            explanation["token_attributions"] = scrub_token_attributions(
                explanation["token_attributions"]
            )
        provenance, warnings = data.get("provenance", {}), prediction.warnings
        if self.settings.deidentify:
            assert self.pseudonyms is not None
            provenance = deidentify_provenance(provenance, self.pseudonyms)
            warnings = [scrub(warning) for warning in warnings]
        return {
            "plugin": prediction.plugin,
            "version": prediction.plugin_version,
            "prediction": {
                key: data.get(key) for key in ("label", "probabilities", "outputs", "explanation")
            },
            "warnings": warnings,
            "elapsed_s": round(prediction.elapsed_s, 4),
            "provenance": provenance,
        }
