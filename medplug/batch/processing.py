"""From decoded studies to finished records: inference, SR, heatmaps, push, journal.

Shared by ``medplug batch`` and ``medplug listen``: both hand a list of
``LoadedStudy`` to ``StudyProcessor.process``. Inference runs through each
plugin's ``predict_batch``; if a batch call fails, the studies are retried
one by one so only the bad study gets the error. Every study ends as one
journal record, ``ok``, ``partial`` (some plugins failed) or ``error``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import medplug
from medplug.batch.deidentify import PseudonymMap, deidentify
from medplug.batch.destinations import Destination
from medplug.batch.heatmap_sc import build_heatmap_sc
from medplug.batch.identifiers import StudyLabeller
from medplug.batch.journal import Journal, StudyEntry
from medplug.batch.loading import LoadedStudy, error_info
from medplug.batch.outputs import OutputFolder
from medplug.batch.sr import SrIdentity, build_sr
from medplug.contract import Case, Plugin, Prediction

log = logging.getLogger("medplug.batch")


@dataclass
class ProcessorSettings:
    """What to do with results besides the JSON line."""

    write_sr: bool = True
    write_heatmaps: bool = True
    deidentify: bool = False
    source_kind: str = "folder"
    push_deidentified: bool = False  # listener forwarding out of the hospital


@dataclass
class StudyOutcome:
    """Per-study scratch space while a batch is being finished."""

    loaded: LoadedStudy
    entry: StudyEntry
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    predict_s: float = 0.0


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
    ) -> None:
        if settings.deidentify and pseudonyms is None:
            raise ValueError("de-identification needs a pseudonym map")
        self.plugins = list(plugins)
        self.journal = journal
        self.output = output
        self.labeller = labeller
        self.settings = settings
        self.destination = destination
        self.pseudonyms = pseudonyms

    def process(self, loaded: Sequence[LoadedStudy]) -> list[dict[str, Any]]:
        """Predict, write and record every study in ``loaded``; returns their records."""
        outcomes = [StudyOutcome(item, self.journal.get(item.key)) for item in loaded]
        for outcome in outcomes:
            if outcome.loaded.error:
                outcome.errors.append(outcome.loaded.error)
        run_plugins(self.plugins, outcomes)
        return [self._finish(outcome) for outcome in outcomes]

    def _finish(self, outcome: StudyOutcome) -> dict[str, Any]:
        started = time.perf_counter()
        study = self.labeller.hash(outcome.entry.key)
        files: dict[str, str] = {}
        pushed = None
        if outcome.predictions and outcome.loaded.evidence:
            try:
                objects = self._dicom_objects(outcome, study, files)
                if self.destination is not None:
                    self.destination.send(objects)
                    pushed = self.destination.description
            except Exception as exc:  # a failed write/push is this study's error only
                outcome.errors.append(error_info("output", exc))
        record = self._record(outcome, study, files, pushed, time.perf_counter() - started)
        self.journal.finish(outcome.entry.key, record)
        self.output.append_result(record)
        for error in outcome.errors:
            log.warning(
                "%s: %s failed (%s)",
                self.labeller.for_log(outcome.entry.key),
                error.get("plugin") or error["stage"],
                error["reason"],
            )
        log.info("%s: %s", self.labeller.for_log(outcome.entry.key), record["status"])
        return record

    def _dicom_objects(
        self, outcome: StudyOutcome, study: str, files: dict[str, str]
    ) -> list[Dataset]:
        """SR (and heatmap SCs), written to the output folder; returns what to push."""
        entry, evidence = outcome.entry, outcome.loaded.evidence
        objects: list[tuple[str, Dataset, Path]] = []
        if self.settings.write_sr:
            identity = SrIdentity(entry.sr_series_uid, entry.sr_sop_uid)
            sr = build_sr(outcome.predictions, evidence, identity)
            objects.append(("sr", sr, self.output.sr_path(study)))
        case = outcome.loaded.case
        if self.settings.write_heatmaps and case is not None and case.image is not None:
            for prediction in outcome.predictions:
                heatmap = prediction.explanation.heatmap if prediction.explanation else None
                if heatmap is None:
                    continue
                sop_uid = generate_uid(entropy_srcs=[entry.sc_sop_uid, prediction.plugin])
                sc = build_heatmap_sc(
                    case.image.array, heatmap, evidence[0], entry.sc_series_uid, sop_uid
                )
                path = self.output.sc_path(study, prediction.plugin)
                objects.append((f"heatmap:{prediction.plugin}", sc, path))
        to_push = []
        for name, dataset, path in objects:
            local = dataset
            if self.settings.deidentify:
                assert self.pseudonyms is not None
                local = deidentify(copy.deepcopy(dataset), self.pseudonyms)
            self.output.write_dicom(local, path)
            files[name] = str(path.relative_to(self.output.root))
            to_push.append(local if self.settings.push_deidentified else dataset)
        return to_push

    def _record(
        self,
        outcome: StudyOutcome,
        study: str,
        files: dict[str, str],
        pushed: str | None,
        write_s: float,
    ) -> dict[str, Any]:
        status = (
            "ok"
            if outcome.predictions and not outcome.errors
            else "partial"
            if outcome.predictions
            else "error"
        )
        study_uid, accession = outcome.entry.key, outcome.entry.locator.get("accession")
        series_uid = outcome.loaded.case.image.series_uid if _has_image(outcome) else None
        if self.settings.deidentify:
            assert self.pseudonyms is not None
            study_uid = self.pseudonyms.pseudonym("uid", study_uid)
            series_uid = self.pseudonyms.pseudonym("uid", series_uid) if series_uid else None
            accession = None
        load_s = outcome.loaded.load_s
        return {
            "study": study,
            "study_uid": study_uid,
            "accession": accession,
            "status": status,
            "results": [self._result(p) for p in outcome.predictions],
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
                "instances": len(outcome.loaded.evidence),
                "files": files,
                "pushed_to": pushed,
                "attempt": outcome.entry.attempts,
                "deidentified": self.settings.deidentify,
            },
        }

    def _result(self, prediction: Prediction) -> dict[str, Any]:
        """The prediction as JSON, without arrays (heatmaps go to SC files)."""
        data = prediction.to_json()
        data.pop("embedding", None)
        explanation = data.get("explanation") or {}
        explanation.pop("heatmap", None)
        explanation.pop("heatmap_affine", None)
        if self.settings.deidentify and explanation.get("token_attributions"):
            explanation["token_attributions"] = None  # report words may identify the patient
        return {
            "plugin": prediction.plugin,
            "version": prediction.plugin_version,
            "prediction": {
                key: data.get(key) for key in ("label", "probabilities", "outputs", "explanation")
            },
            "warnings": prediction.warnings,
            "elapsed_s": round(prediction.elapsed_s, 4),
            "provenance": data.get("provenance", {}),
        }


def _has_image(outcome: StudyOutcome) -> bool:
    return outcome.loaded.case is not None and outcome.loaded.case.image is not None
