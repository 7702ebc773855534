"""A study's results (SR, Grad-CAM SCs, FHIR report), built and written as one picklable job.

Building an SR with highdicom is pure Python, tens of milliseconds a study: on
the inference process it would hold the GIL beside the model. As a job it runs
in the decoder worker processes instead (``medplug batch``), or inline where
there is no pool (``medplug listen``). The job carries only what the objects
need: predictions without arrays, the evidence headers, each heatmap's peak
slice, and the UIDs the journal chose (so a rerun writes the same objects).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medplug.batch.deidentify import PseudonymMap, deidentify
from medplug.batch.heatmap_sc import build_heatmap_sc
from medplug.batch.loading import StudyEvidence, error_info
from medplug.batch.outputs import OutputFolder
from medplug.batch.sr import SrIdentity, build_sr
from medplug.contract import Prediction
from medplug.fhir import diagnostic_report


@dataclass
class DicomOutputJob:
    """Everything needed to build and write one study's DICOM objects (picklable)."""

    study: str  # the study's label in file names (a hash unless identifiers are shown)
    predictions: list[Prediction]
    evidence: StudyEvidence
    output_root: Path
    sr_identity: SrIdentity | None  # None: no SR
    sc_series_uid: str
    sc_sop_seed: str  # each plugin's SC SOP Instance UID derives from it
    heatmap_slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pseudonym_map: Path | None = None  # set: the written copies are de-identified
    push: str = "none"  # which copies to return for pushing: none, original, deidentified
    write_fhir: bool = True  # fhir/<study>.json: the FHIR R4 DiagnosticReport


@dataclass
class DicomOutputResult:
    """Files written (name -> path relative to the output folder), objects to push."""

    files: dict[str, str] = field(default_factory=dict)
    to_push: list[Dataset] = field(default_factory=list)
    error: dict[str, str] | None = None
    elapsed_s: float = 0.0


def write_dicom_outputs(job: DicomOutputJob) -> DicomOutputResult:
    """Build, de-identify if asked, and write the study's objects; never raises."""
    started = time.perf_counter()
    result = DicomOutputResult()
    try:
        output = OutputFolder(job.output_root)
        pseudonyms = _pseudonym_map(job.pseudonym_map) if job.pseudonym_map else None
        for name, dataset, path in _objects(job, output):
            local = deidentify(copy.deepcopy(dataset), pseudonyms) if pseudonyms else dataset
            output.write_dicom(local, path)
            result.files[name] = str(path.relative_to(output.root))
            if job.push != "none":
                result.to_push.append(local if job.push == "deidentified" else dataset)
        if job.write_fhir:
            path = _write_fhir(job, output, pseudonyms)
            result.files["fhir"] = str(path.relative_to(output.root))
    except Exception as exc:  # a failed write is this study's error only
        result.error = error_info("output", exc)
    result.elapsed_s = time.perf_counter() - started
    return result


def _objects(job: DicomOutputJob, output: OutputFolder) -> list[tuple[str, Dataset, Path]]:
    objects: list[tuple[str, Dataset, Path]] = []
    if job.sr_identity is not None:
        sr = build_sr(job.predictions, job.evidence.datasets(), job.sr_identity)
        objects.append(("sr", sr, output.sr_path(job.study)))
    for plugin, (image, heatmap) in job.heatmap_slices.items():
        sop_uid = generate_uid(entropy_srcs=[job.sc_sop_seed, plugin])
        sc = build_heatmap_sc(image, heatmap, job.evidence.reference, job.sc_series_uid, sop_uid)
        objects.append((f"heatmap:{plugin}", sc, output.sc_path(job.study, plugin)))
    return objects


def _write_fhir(job: DicomOutputJob, output: OutputFolder, pseudonyms: PseudonymMap | None) -> Path:
    """The FHIR report cites the study by the same UID the written SR carries."""
    study_uid = job.evidence.study_uid
    if pseudonyms is not None:
        study_uid = pseudonyms.pseudonym("uid", study_uid)
    report = diagnostic_report(study_uid, job.predictions, report_id=job.study)
    return output.write_json(report, output.fhir_path(job.study))


_OPEN_MAPS: dict[Path, PseudonymMap] = {}


def _pseudonym_map(path: Path) -> PseudonymMap:
    """One connection per process to the local map (SQLite handles the concurrency)."""
    if path not in _OPEN_MAPS:
        _OPEN_MAPS[path] = PseudonymMap(path)
    return _OPEN_MAPS[path]
