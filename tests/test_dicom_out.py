"""DICOM output end to end: Parametric Map, SEG and SR from a real segmentation plugin.

A real third-party plugin (``seg_support.threshold-seg``, pip-installed) runs
through ``medplug batch``; every object it leaves is checked the way a PACS
and a viewer would see it: dciodvfy errors, frames on the source slices
(position and orientation per frame), the map's hottest voxel inside the
phantom lesion, the SEG's voxels equal to the plugin's mask (recomputed from
the source files' own pixels, independent of medplug's (i, j, k) convention),
the SR's segment volume, a wrong-shape mask isolated to its study, and a real
Orthanc round trip by STOW-RS and WADO-RS.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from batch_support import ORTHANC, OrthancServer, env_with, tool
from pydicom.uid import generate_uid
from seg_support import (
    LESION_HU,
    THRESHOLD_HU,
    install_threshold_seg,
    write_study,
    write_threshold_model,
)

from medplug.contract import Prediction, Segment, Segmentation
from medplug.dicom_out.grid import GeometryMismatchError, resample_to_grid

needs_dciodvfy = pytest.mark.skipif(tool("dciodvfy") is None, reason="dciodvfy not installed")
SAGITTAL = {"row_cosine": (0.0, 1.0, 0.0), "col_cosine": (0.0, 0.0, -1.0)}


@pytest.fixture(scope="module")
def seg_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_threshold_seg(tmp_path_factory.mktemp("threshold_seg"))


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_threshold_model(tmp_path_factory.mktemp("models") / "threshold-seg")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An axial study (heatmap > 1 MiB: spooled to the writer), a sagittal one, a bad one."""
    root = tmp_path_factory.mktemp("studies")
    return {
        "axial": write_study(root / "axial", (128, 96, 20), (70, 40, 9)),
        "sagittal": write_study(
            root / "sagittal",
            (48, 40, 10),
            (20, 25, 4),
            seed=1,
            spacing=(0.9, 1.1, 2.0),
            origin=(10.0, -50.0, 80.0),
            **SAGITTAL,
        ),  # fmt: skip
        "wrong-shape": write_study(root / "wrong", (48, 40, 10), (20, 20, 5), seed=2),
    }


def study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)


def run_batch(source: str, out: Path, site: Path, model: Path, *extra: str) -> list[dict]:
    command = [sys.executable, "-m", "medplug.cli.main", "batch", source,
               "--plugin", "threshold-seg", "--model", str(model), "--out", str(out),
               "--no-progress", *extra]  # fmt: skip
    result = subprocess.run(command, env=env_with(site), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def batch(studies, seg_site, seg_model, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """One ``medplug batch`` (a worker process, default --heatmap-format pm) over the studies."""
    root = tmp_path_factory.mktemp("batch")
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_uid", "report_text"])
        writer.writerow([study_uid(studies["wrong-shape"]), "WRONG-SHAPE-MASK please"])
    source = studies["axial"].parent  # the three studies, one folder each
    records = run_batch(str(source), root / "out", seg_site, seg_model,
                        "--workers", "1", "--manifest", str(manifest))  # fmt: skip
    by_study = {name: next(r for r in records if r["study_uid"] == study_uid(folder))
                for name, folder in studies.items()}  # fmt: skip
    return root / "out", by_study


# ----------------------------------------------------------------- helpers


def source_slices(folder: Path) -> dict[tuple[float, ...], pydicom.Dataset]:
    """The source series by rounded Image Position (Patient)."""
    slices = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        slices[tuple(round(float(v), 3) for v in ds.ImagePositionPatient)] = ds
    return slices


def frame_geometry(ds: pydicom.Dataset) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(position, orientation) of every frame of a multi-frame object."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        position = item.PlanePositionSequence[0].ImagePositionPatient
        orientation_item = item if "PlaneOrientationSequence" in item else shared
        orientation = orientation_item.PlaneOrientationSequence[0].ImageOrientationPatient
        frames.append((tuple(round(float(v), 3) for v in position),
                       tuple(round(float(v), 5) for v in orientation)))  # fmt: skip
    return frames


def hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's Error and Warning lines for ``path``."""
    result = subprocess.run([tool("dciodvfy") or "dciodvfy", str(path)],
                            capture_output=True, text=True)  # fmt: skip
    lines = (result.stdout + result.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warn")]


def assert_on_source_slices(obj: pydicom.Dataset, folder: Path) -> dict:
    """Every frame sits on one source slice (same position and orientation), all covered."""
    slices = source_slices(folder)
    some = next(iter(slices.values()))
    orientation = tuple(round(float(v), 5) for v in some.ImageOrientationPatient)
    geometry = frame_geometry(obj)
    assert sorted(position for position, _ in geometry) == sorted(slices)
    assert all(found == orientation for _, found in geometry)
    assert obj.FrameOfReferenceUID == some.FrameOfReferenceUID
    assert obj.StudyInstanceUID == some.StudyInstanceUID
    assert obj.ReferencedSeriesSequence[0].SeriesInstanceUID == some.SeriesInstanceUID
    assert (obj.Rows, obj.Columns) == (some.Rows, some.Columns)
    return slices


# ----------------------------------------------------------------- batch outputs


@needs_dciodvfy
def test_every_written_object_validates(batch) -> None:
    out, _ = batch
    written = sorted(out.glob("pm/*.dcm")) + sorted(out.glob("seg/*.dcm"))
    written += sorted(out.glob("sr/*.dcm"))
    assert len(written) == 6  # PM, SEG and SR for each of the two good studies
    warnings = {}
    for path in written:
        errors, warnings[path.parent.name] = dciodvfy(path)
        assert errors == [], (path, errors)


def test_parametric_map_sits_on_the_source_slices_and_peaks_in_the_lesion(batch, studies) -> None:
    out, records = batch
    for name in ("axial", "sagittal"):
        files = records[name]["provenance"]["files"]
        pm = pydicom.dcmread(out / files["heatmap:threshold-seg"])
        assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
        slices = assert_on_source_slices(pm, studies[name])
        mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert mapping.LUTLabel == "RELEVANCE"
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
        assert float(mapping.DoubleFloatRealWorldValueLastValueMapped) == 1.0
        assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "RELEVANCE"
        values = pm.pixel_array
        assert values.dtype == np.float32 and values.max() == pytest.approx(1.0)
        frame, row, column = np.unravel_index(int(np.argmax(values)), values.shape)
        position, _ = frame_geometry(pm)[frame]
        assert hounsfield(slices[position])[row, column] == pytest.approx(LESION_HU)


def test_seg_voxels_equal_the_plugin_mask_and_the_sr_measures_them(batch, studies) -> None:
    out, records = batch
    for name in ("axial", "sagittal"):
        files = records[name]["provenance"]["files"]
        seg = pydicom.dcmread(out / files["seg:threshold-seg"])
        assert seg.SegmentationType == "BINARY"
        (segment,) = seg.SegmentSequence
        assert segment.SegmentLabel == "lesion"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
        slices = assert_on_source_slices(seg, studies[name])
        masks = seg.pixel_array
        voxels = 0
        for frame, (position, _) in enumerate(frame_geometry(seg)):
            expected = hounsfield(slices[position]) > THRESHOLD_HU  # the plugin's rule
            np.testing.assert_array_equal(masks[frame].astype(bool), expected)
            voxels += int(expected.sum())
        assert voxels > 0
        some = next(iter(slices.values()))
        voxel_ml = float(some.PixelSpacing[0]) * float(some.PixelSpacing[1])
        voxel_ml *= float(some.SliceThickness) / 1000.0
        sr = pydicom.dcmread(out / files["sr"])
        volume, referenced = sr_volume(sr)
        assert volume == pytest.approx(voxels * voxel_ml, rel=1e-4)
        assert referenced == (seg.SOPInstanceUID, 1)
        (summary,) = records[name]["results"][0]["prediction"]["outputs"]["segments"]
        assert summary["label"] == "lesion"
        assert summary["volume_ml"] == pytest.approx(voxels * voxel_ml, rel=1e-3)


def sr_volume(sr: pydicom.Dataset) -> tuple[float, tuple[str, int]]:
    """The SR's one volume measurement (mL) and the SEG segment it cites."""
    found = []

    def walk(items) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0]
            if item.ValueType == "NUM" and name.CodeValue == "118565006":
                measured = item.MeasuredValueSequence[0]
                assert measured.MeasurementUnitsCodeSequence[0].CodeValue == "ml"
                found.append(("volume", float(measured.NumericValue)))
            if (
                item.ValueType == "IMAGE"
                and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]
            ):
                reference = item.ReferencedSOPSequence[0]
                found.append(("segment", (reference.ReferencedSOPInstanceUID,
                                          int(reference.ReferencedSegmentNumber))))  # fmt: skip
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    values = dict(found)
    assert [kind for kind, _ in found].count("volume") == 1
    return values["volume"], values["segment"]


def test_a_wrong_shape_mask_is_an_error_record_and_no_object(batch) -> None:
    out, records = batch
    bad = records["wrong-shape"]
    assert bad["status"] == "error"
    (error,) = bad["errors"]
    assert error["plugin"] == "threshold-seg" and error["stage"] == "predict"
    assert "segmentation has shape (47, 40, 10)" in error["message"]
    assert bad["provenance"]["files"] == {}
    assert len(list(out.glob(f"*/{bad['study']}*"))) == 0  # nothing, not a broken object
    assert records["axial"]["status"] == records["sagittal"]["status"] == "ok"


def test_secondary_capture_format_and_none(studies, seg_site, seg_model, tmp_path) -> None:
    """--heatmap-format sc: the RGB SC instead of the PM (the SEG stays); none: no heatmap."""
    run_batch(str(studies["sagittal"]), tmp_path / "sc", seg_site, seg_model,
              "--workers", "0", "--heatmap-format", "sc")  # fmt: skip
    assert len(list((tmp_path / "sc" / "sc").glob("*.dcm"))) == 1
    assert not (tmp_path / "sc" / "pm").exists()
    assert len(list((tmp_path / "sc" / "seg").glob("*.dcm"))) == 1
    run_batch(str(studies["sagittal"]), tmp_path / "none", seg_site, seg_model,
              "--workers", "0", "--no-heatmaps")  # fmt: skip
    assert not (tmp_path / "none" / "pm").exists() and not (tmp_path / "none" / "sc").exists()


def test_deidentified_pm_seg_and_sr_still_cite_each_other(
    studies, seg_site, seg_model, tmp_path
) -> None:
    (record,) = run_batch(str(studies["sagittal"]), tmp_path / "out", seg_site, seg_model,
                          "--workers", "0", "--deidentify", "--pseudonym-map",
                          str(tmp_path / "pseudonyms.sqlite"))  # fmt: skip
    files = {name: tmp_path / "out" / path for name, path in record["provenance"]["files"].items()}
    source = pydicom.dcmread(next(studies["sagittal"].iterdir()), stop_before_pixels=True)
    seg = pydicom.dcmread(files["seg:threshold-seg"])
    pm = pydicom.dcmread(files["heatmap:threshold-seg"])
    sr = pydicom.dcmread(files["sr"])
    for written in (seg, pm, sr):
        assert written.PatientIdentityRemoved == "YES"
        assert written.StudyInstanceUID == sr.StudyInstanceUID != source.StudyInstanceUID
    for path in files.values():
        raw = path.read_bytes()
        for identifier in (source.StudyInstanceUID, source.SeriesInstanceUID, source.PatientID):
            assert str(identifier).encode() not in raw, path
    assert sr_volume(sr)[1] == (seg.SOPInstanceUID, 1)
    assert (
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        == pm.ReferencedSeriesSequence[0].SeriesInstanceUID
    )  # the same pseudonymous source series
    if tool("dciodvfy"):
        for name in ("sr", "heatmap:threshold-seg", "seg:threshold-seg"):
            assert dciodvfy(files[name])[0] == [], name


def test_a_source_without_frame_of_reference_gets_an_sc_and_a_seg_error(
    seg_site, seg_model, tmp_path
) -> None:
    """No patient frame of reference (a radiograph, an odd export): no PM or SEG can be
    registered to it; the heatmap falls back to the SC, the mask is a specific error."""
    from dicom_factory import write_ct_series
    from seg_support import lesion_phantom

    write_ct_series(tmp_path / "study", lesion_phantom((48, 40, 10), (20, 20, 5)))
    (record,) = run_batch(str(tmp_path / "study"), tmp_path / "out", seg_site, seg_model,
                          "--workers", "0")  # fmt: skip
    assert record["status"] == "partial"
    (error,) = record["errors"]
    assert error["reason"] == "GeometryMismatchError" and error["plugin"] == "threshold-seg"
    assert "no Frame of Reference UID" in error["message"]
    assert sorted(record["provenance"]["files"]) == ["fhir", "heatmap:threshold-seg", "sr"]
    assert record["provenance"]["files"]["heatmap:threshold-seg"].startswith("sc/")


# ----------------------------------------------------------------- writer on its own


def test_the_writer_refuses_a_mask_off_the_grid_and_keeps_the_other_objects(
    studies, tmp_path
) -> None:
    """A plugin that bypasses the contract's check still gets no SEG: an error, the rest written."""
    from medplug.dicom_out.evidence import study_evidence
    from medplug.dicom_out.job import DicomOutputJob, write_dicom_outputs
    from medplug.dicom_out.seg import build_segmentation
    from medplug.dicom_out.sr import SrIdentity
    from medplug.ingest import load_image, scan_folder

    scan = scan_folder(studies["sagittal"], workers=1)
    image = load_image(studies["sagittal"], scan=scan)
    evidence = study_evidence(scan, image)
    wrong = Segmentation(np.ones((48, 40, 9), np.uint8), [Segment(1, "lesion")])
    with pytest.raises(GeometryMismatchError, match="shape"):
        build_segmentation(wrong, evidence, "p", "1", generate_uid(), generate_uid())
    prediction = Prediction("p", "1", "c", "lesion", {"lesion": 1.0}, segmentation=wrong)
    job = DicomOutputJob(
        study="s", predictions=[prediction], evidence=evidence, output_root=tmp_path,
        sr_identity=SrIdentity.new(), sc_series_uid=generate_uid(), sc_sop_seed=generate_uid(),
        heatmaps={"p": np.asarray(image.array)}, write_fhir=False,
    )  # fmt: skip
    result = write_dicom_outputs(job)
    assert result.error is None
    (error,) = result.object_errors
    assert error["plugin"] == "p" and "shape (48, 40, 9)" in error["message"]
    assert sorted(result.files) == ["heatmap:p", "sr"]
    assert not (tmp_path / "seg").exists()
    assert "ReferencedSegmentNumber" not in str(pydicom.dcmread(tmp_path / result.files["sr"]))


def test_a_heatmap_on_a_coarser_grid_is_resampled_onto_the_source_voxels() -> None:
    fine = np.diag([0.8, 0.7, 2.5, 1.0])
    fine[:3, 3] = (-5.0, 3.0, 40.0)
    coarse_affine = fine @ np.diag([2.0, 2.0, 2.0, 1.0])
    i, j, k = np.indices((5, 4, 3), dtype=np.float32)
    coarse = 3 * i + 2 * j + k  # linear: interpolation is exact inside
    resampled = resample_to_grid(coarse, coarse_affine, (9, 7, 5), fine)
    fi, fj, fk = np.indices((9, 7, 5), dtype=np.float32)
    np.testing.assert_allclose(resampled, 3 * fi / 2 + 2 * fj / 2 + fk / 2, atol=1e-5)


# ----------------------------------------------------------------- serve


def test_serve_answers_pm_seg_and_a_zip_that_cite_each_other(
    studies, seg_site, seg_model, monkeypatch
) -> None:
    from fastapi.testclient import TestClient

    from medplug.serve import ServeSettings, create_app

    monkeypatch.syspath_prepend(str(seg_site))
    token = "test-token-0123456789abcdef"
    client = TestClient(create_app(ServeSettings(token=token, models_dir=seg_model.parent)))
    files = [("files", (path.name, path.read_bytes(), "application/dicom"))
             for path in sorted(studies["sagittal"].iterdir())]  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    answers = {}
    for kind in ("pm", "seg", "dicom"):
        response = client.post(f"/predict/threshold-seg?output={kind}", headers=headers,
                               files=files)  # fmt: skip
        assert response.status_code == 200, response.text
        answers[kind] = response.content
    pm = pydicom.dcmread(io.BytesIO(answers["pm"]))
    assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert_on_source_slices(pm, studies["sagittal"])
    seg = pydicom.dcmread(io.BytesIO(answers["seg"]))
    assert_on_source_slices(seg, studies["sagittal"])
    with zipfile.ZipFile(io.BytesIO(answers["dicom"])) as archive:
        assert sorted(archive.namelist()) == ["pm.dcm", "seg.dcm", "sr.dcm"]
        zipped_seg = pydicom.dcmread(io.BytesIO(archive.read("seg.dcm")))
        sr = pydicom.dcmread(io.BytesIO(archive.read("sr.dcm")))
    _, referenced = sr_volume(sr)
    assert referenced == (zipped_seg.SOPInstanceUID, 1)


# ----------------------------------------------------------------- Orthanc


@pytest.mark.orthanc
@pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc not installed")
@pytest.mark.skipif(tool("storescu") is None, reason="dcmtk storescu not installed")
def test_pm_seg_and_sr_land_in_the_source_study_and_come_back_unchanged(
    studies, seg_site, seg_model, tmp_path
) -> None:
    from dicomweb_client.api import DICOMwebClient

    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        server.store_folder(studies["sagittal"])
        uid = study_uid(studies["sagittal"])
        (record,) = run_batch(server.dicomweb, tmp_path / "out", seg_site, seg_model,
                              "--workers", "1")  # fmt: skip
        assert record["status"] == "ok", record
        assert record["provenance"]["pushed_to"].startswith("STOW-RS")
        client = DICOMwebClient(server.dicomweb)
        by_sop = {}
        for series in server.series_of_study(uid):
            for instance in client.retrieve_series(uid, series["0020000E"]["Value"][0]):
                by_sop[instance.SOPInstanceUID] = instance
        for name in ("heatmap:threshold-seg", "seg:threshold-seg", "sr"):
            local = pydicom.dcmread(tmp_path / "out" / record["provenance"]["files"][name])
            retrieved = by_sop[local.SOPInstanceUID]  # in the source study
            assert retrieved.StudyInstanceUID == uid
            assert retrieved == local  # every element, pixels included
    finally:
        server.stop()
