"""A study's results (SR, Parametric Maps or SCs, SEGs, FHIR report) built and written as one job.

Building DICOM objects with highdicom is pure Python, tens of milliseconds a
study: on the inference process it would hold the GIL beside the model. As a
job it runs in the decoder worker processes instead (``medplug batch``), or
inline where there is no pool (``medplug listen``). The job carries only what
the objects need: predictions without embeddings, the evidence headers, each
heatmap on the source grid (or a spooled ``.npy`` of it, mapped here and
deleted after) or, for Secondary Captures, its peak slice, and the UIDs the
journal chose (so a rerun writes the same objects).

Each object is built on its own: one that cannot be built (a mask off the
source grid, say) becomes an error for its plugin, and the others are still
written. The SR cites only the SEGs that were built.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medplug.batch.loading import error_info
from medplug.batch.outputs import OutputFolder
from medplug.contract import Prediction
from medplug.dicom_out import HEATMAP_FORMATS  # noqa: F401  (re-exported)
from medplug.dicom_out.deidentify import PseudonymMap, deidentify
from medplug.dicom_out.evidence import StudyEvidence
from medplug.dicom_out.heatmap_sc import build_heatmap_sc
from medplug.dicom_out.parametric_map import build_parametric_map
from medplug.dicom_out.seg import build_segmentation, coded, segment_numbers
from medplug.dicom_out.sr import SegmentVolume, SrIdentity, build_sr
from medplug.fhir import diagnostic_report


@dataclass
class DicomOutputJob:
    """Everything needed to build and write one study's DICOM objects (picklable)."""

    study: str  # the study's label in file names (a hash unless identifiers are shown)
    predictions: list[Prediction]
    evidence: StudyEvidence
    output_root: Path
    sr_identity: SrIdentity | None  # None: no SR
    sc_series_uid: str  # the PM and SEG series UIDs derive from it
    sc_sop_seed: str  # each plugin's SC, PM and SEG SOP Instance UIDs derive from it
    # pm: plugin -> heatmap on the source grid (i, j, k), or the .npy file holding it
    heatmaps: dict[str, np.ndarray | str] = field(default_factory=dict)
    # sc: plugin -> (image slice, heatmap slice) where the heatmap peaks
    heatmap_slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pseudonym_map: Path | None = None  # set: the written copies are de-identified
    push: str = "none"  # which copies to return for pushing: none, original, deidentified
    write_fhir: bool = True  # fhir/<study>.json: the FHIR R4 DiagnosticReport


@dataclass
class DicomOutputResult:
    """Files written (name -> path relative to the output folder), objects to push."""

    files: dict[str, str] = field(default_factory=dict)
    to_push: list[Dataset] = field(default_factory=list)
    error: dict[str, str] | None = None  # nothing (more) could be written
    object_errors: list[dict[str, str]] = field(default_factory=list)  # one object each
    elapsed_s: float = 0.0


def object_uids(job: DicomOutputJob, kind: str, plugin: str) -> tuple[str, str]:
    """(series, SOP instance) UIDs of a plugin's PM or SEG: stable across reruns."""
    series = generate_uid(entropy_srcs=[job.sc_series_uid, kind])
    return series, generate_uid(entropy_srcs=[job.sc_sop_seed, kind, plugin])


def write_dicom_outputs(job: DicomOutputJob) -> DicomOutputResult:
    """Build, de-identify if asked, and write the study's objects; never raises."""
    started = time.perf_counter()
    result = DicomOutputResult()
    try:
        output = OutputFolder(job.output_root)
        pseudonyms = _pseudonym_map(job.pseudonym_map) if job.pseudonym_map else None
        for name, dataset, path in _objects(job, output, result.object_errors):
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
    finally:
        _remove_spooled(job)
    result.elapsed_s = time.perf_counter() - started
    return result


def _objects(
    job: DicomOutputJob, output: OutputFolder, errors: list[dict[str, str]]
) -> Iterator[tuple[str, Dataset, Path]]:
    """SEGs, then maps, then the SR citing the SEGs built (one object in memory at a time)."""
    volumes: list[SegmentVolume] = []
    for prediction in job.predictions:
        if prediction.segmentation is None:
            continue
        try:
            seg, found = _segmentation(job, prediction)
        except Exception as exc:  # this plugin's mask only; the rest is written
            errors.append(error_info("output", exc) | {"plugin": prediction.plugin})
            continue
        volumes += found
        yield f"seg:{prediction.plugin}", seg, output.seg_path(job.study, prediction.plugin)
    versions = {p.plugin: p.plugin_version for p in job.predictions}
    for plugin, heatmap in job.heatmaps.items():
        series_uid, sop_uid = object_uids(job, "pm", plugin)
        try:
            array = np.load(heatmap, mmap_mode="r") if isinstance(heatmap, str) else heatmap
            pm = build_parametric_map(
                array, job.evidence, plugin, versions.get(plugin, ""), series_uid, sop_uid
            )
        except Exception as exc:
            errors.append(error_info("output", exc) | {"plugin": plugin})
            continue
        yield f"heatmap:{plugin}", pm, output.pm_path(job.study, plugin)
    for plugin, (image, heatmap) in job.heatmap_slices.items():
        sop_uid = generate_uid(entropy_srcs=[job.sc_sop_seed, plugin])
        sc = build_heatmap_sc(image, heatmap, job.evidence.reference, job.sc_series_uid, sop_uid)
        yield f"heatmap:{plugin}", sc, output.sc_path(job.study, plugin)
    if job.sr_identity is not None:
        sr = build_sr(job.predictions, job.evidence.datasets(), job.sr_identity, volumes)
        yield "sr", sr, output.sr_path(job.study)


def _segmentation(
    job: DicomOutputJob, prediction: Prediction
) -> tuple[Dataset, list[SegmentVolume]]:
    """The plugin's SEG and, per segment, its volume for the SR."""
    segmentation = prediction.segmentation
    assert segmentation is not None
    series_uid, sop_uid = object_uids(job, "seg", prediction.plugin)
    seg = build_segmentation(
        segmentation, job.evidence, prediction.plugin, prediction.plugin_version, series_uid,
        sop_uid,
    )  # fmt: skip
    spacing = _spacing(job.evidence)
    volumes = [
        SegmentVolume(
            seg_sop_uid=sop_uid,
            seg_series_uid=series_uid,
            study_uid=job.evidence.study_uid,
            source_series_uid=job.evidence.series_uid,
            segment_number=number,
            label=segment.label,
            category=coded(segment.category),
            type=coded(segment.type),
            volume_ml=segmentation.volume_ml(segment, spacing),
            plugin=prediction.plugin,
            plugin_version=prediction.plugin_version,
        )
        for number, segment in enumerate(segment_numbers(segmentation), start=1)
    ]
    return seg, volumes


def _spacing(evidence: StudyEvidence) -> tuple[float, ...]:
    """Voxel size along (i, j, k) in mm, from the volume's affine."""
    assert evidence.affine is not None and evidence.shape is not None
    columns = evidence.affine[:3, : len(evidence.shape)]
    return tuple(float(np.linalg.norm(columns[:, axis])) for axis in range(len(evidence.shape)))


def _remove_spooled(job: DicomOutputJob) -> None:
    for heatmap in job.heatmaps.values():
        if isinstance(heatmap, str):
            Path(heatmap).unlink(missing_ok=True)


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
