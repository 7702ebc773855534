"""The synthetic cohort: layout, valid DICOM, geometry that matches its NIfTI, labels that hold."""

from __future__ import annotations

import csv
import filecmp
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from typer.testing import CliRunner

from medplug.errors import DataError
from medplug.sampledata import MANIFEST_COLUMNS, generate_cohort, variant_for_case

SMALL = {"shape": (32, 32, 8)}  # fast cohorts for option tests


def read_manifest(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_series(folder: Path) -> list[pydicom.Dataset]:
    """All slices, sorted by position along the slice normal (the truth, not names)."""
    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    normal = np.cross(*np.reshape(datasets[0].ImageOrientationPatient, (2, 3)))
    return sorted(datasets, key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))


def hu_volume(datasets: list[pydicom.Dataset]) -> np.ndarray:
    """(column, row, slice) HU array from sorted slices."""
    slices = [
        ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        for ds in datasets
    ]
    return np.stack([s.T for s in slices], axis=-1)


def test_layout_and_manifest(sample_cohort: Path) -> None:
    rows = read_manifest(sample_cohort)
    assert len(rows) == 12
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert [r["case_id"] for r in rows] == [f"case{i:04d}" for i in range(1, 13)]
    assert sorted(r["label"] for r in rows) == ["0"] * 6 + ["1"] * 6
    for row in rows:
        assert row["label_name"] == {"0": "no_lesion", "1": "lesion"}[row["label"]]
        for column in ("dicom_dir", "nifti", "lesion_mask", "report_path"):
            assert (sample_cohort / row[column]).exists(), (row["case_id"], column)
        assert (sample_cohort / row["report_path"]).read_text() == row["report_text"]
        assert len(list((sample_cohort / row["dicom_dir"]).iterdir())) == 32
    with (sample_cohort / "clinical.csv").open(newline="") as handle:
        clinical = list(csv.DictReader(handle))
    assert list(clinical[0]) == ["case_id", "age", "sex", "smoking", "crp"]
    for row, clin in zip(rows, clinical, strict=True):
        assert {k: row[k] for k in clin} == clin


def test_dicom_matches_nifti_voxel_for_voxel(sample_cohort: Path) -> None:
    """HU from every (also compressed) DICOM series, sorted by position, equals the NIfTI."""
    for row in read_manifest(sample_cohort):
        datasets = read_series(sample_cohort / row["dicom_dir"])
        nifti = nib.load(sample_cohort / row["nifti"])
        assert nifti.get_data_dtype() == np.int16
        np.testing.assert_array_equal(hu_volume(datasets), np.asarray(nifti.dataobj))
        assert all(ds.StudyInstanceUID == row["study_uid"] for ds in datasets)
        assert all(ds.SeriesInstanceUID == row["series_uid"] for ds in datasets)
        assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)


def test_nifti_affine_maps_voxel_centres_to_image_position_patient(sample_cohort: Path) -> None:
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    for row in read_manifest(sample_cohort):
        affine = nib.load(sample_cohort / row["nifti"]).affine
        datasets = read_series(sample_cohort / row["dicom_dir"])
        for k, ds in enumerate(datasets):
            row_dir, col_dir = np.reshape(np.array(ds.ImageOrientationPatient, float), (2, 3))
            row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
            for i, j in ((0, 0), (5, 0), (0, 7), (ds.Columns - 1, ds.Rows - 1)):
                # DICOM: column i moves along the row direction by the column spacing.
                lps = np.array(ds.ImagePositionPatient, float)
                lps = lps + i * col_spacing * row_dir + j * row_spacing * col_dir
                # NIfTI stores the affine as float32: agree to a micrometre.
                np.testing.assert_allclose(
                    affine @ [i, j, k, 1], [*(lps_to_ras @ lps), 1], atol=1e-3
                )


def test_headers_are_realistic_and_synthetic(sample_cohort: Path) -> None:
    rows = read_manifest(sample_cohort)
    ds = pydicom.dcmread(next((sample_cohort / rows[0]["dicom_dir"]).iterdir()))
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
    assert str(ds.PatientName) == "SYNTHETIC^CASE0001"
    assert ds.Manufacturer == "medplug synthetic"
    assert ds.AccessionNumber == rows[0]["accession"]
    assert (ds.RescaleSlope, ds.RescaleIntercept, ds.BitsStored) == (1, -1024, 12)
    assert ds.pixel_array.dtype == np.uint16
    assert [float(v) for v in ds.PixelSpacing] == [0.75, 0.75]
    assert float(ds.SpacingBetweenSlices) == float(ds.SliceThickness) == 2.5
    assert ds.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
    for row in rows:  # headers carry the true values the CSV shows when not missing
        ds = pydicom.dcmread(next((sample_cohort / row["dicom_dir"]).iterdir()))
        if row["age"]:
            assert int(ds.PatientAge[:3]) == int(row["age"])
        if row["sex"]:
            assert ds.PatientSex == row["sex"]


def test_series_quirks_are_present(sample_cohort: Path) -> None:
    """Shuffled names, InstanceNumber disagreeing with position, every transfer syntax."""
    syntaxes, shuffled, disordered = set(), 0, 0
    for index, row in enumerate(read_manifest(sample_cohort)):
        folder = sample_cohort / row["dicom_dir"]
        datasets = read_series(folder)
        syntaxes |= {ds.file_meta.TransferSyntaxUID for ds in datasets}
        instance_order = [int(ds.InstanceNumber) for ds in datasets]
        by_name = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
        name_positions = [float(ds.ImagePositionPatient[2]) for ds in by_name]
        variant = variant_for_case(index)
        if variant.instance_order != "position":
            disordered += 1
            assert instance_order != sorted(instance_order)
        else:
            assert instance_order == list(range(1, 33))
        if variant.file_names == "shuffled":
            shuffled += 1
            assert name_positions != sorted(name_positions)
            assert not any(p.name.startswith("IM") for p in folder.iterdir())
    assert {RLELossless, JPEGLSLossless, JPEG2000Lossless, ImplicitVRLittleEndian} <= syntaxes
    assert shuffled >= 3 and disordered >= 3


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_files_pass_dciodvfy(sample_cohort: Path) -> None:
    rows = read_manifest(sample_cohort)
    checked = set()
    for index, row in enumerate(rows):
        syntax = variant_for_case(index).transfer_syntax
        if syntax in checked:
            continue
        checked.add(syntax)
        path = next((sample_cohort / row["dicom_dir"]).iterdir())
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        output = result.stdout + result.stderr
        assert "CTImage" in output
        assert "Error" not in output, (row["case_id"], syntax, output)
    assert len(checked) >= 5


def test_lesion_image_mask_and_report_agree_with_label(sample_cohort: Path) -> None:
    for row in read_manifest(sample_cohort):
        hu = np.asarray(nib.load(sample_cohort / row["nifti"]).dataobj)
        mask_image = nib.load(sample_cohort / row["lesion_mask"])
        mask = np.asarray(mask_image.dataobj).astype(bool)
        report = row["report_text"]
        for section in ("INDICATION:", "FINDINGS:", "IMPRESSION:"):
            assert section in report
        if row["label"] == "0":
            assert not mask.any()
            assert not re.search(r"(?<![\d.])\d+ mm", report)
            continue
        assert 30 <= hu[mask].mean() <= 50  # soft tissue inside the lung
        lung = (hu > -950) & (hu < -750)
        assert lung.sum() > 10 * mask.sum()
        diameter = re.search(r"(?<![\d.])(\d+) mm", report).group(1)
        side = re.search(r"(right|left) (?:upper|middle|lower) lobe", report, re.I).group(1)
        # The lobe named in the report is on the side where the mask lies: RAS x grows
        # towards the patient's right (low column index in these axial LPS series).
        centre = np.argwhere(mask).mean(axis=0)
        body_centre = (np.array(mask.shape) - 1) / 2
        centre_x_ras = (mask_image.affine @ [*centre, 1])[0]
        body_x_ras = (mask_image.affine @ [*body_centre, 1])[0]
        assert (side.lower() == "right") == (centre_x_ras > body_x_ras), row["case_id"]
        sphere_voxels = np.pi / 6 * int(diameter) ** 3 / (0.75 * 0.75 * 2.5)
        assert 0.3 * sphere_voxels <= mask.sum() <= 2.5 * sphere_voxels


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate_cohort(tmp_path / "a", n_cases=10, seed=7, **SMALL)
    second = generate_cohort(tmp_path / "b", n_cases=10, seed=7, **SMALL)
    other = generate_cohort(tmp_path / "c", n_cases=10, seed=8, **SMALL)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) == 2 + 10 * (8 + 3)
    _, mismatch, errors = filecmp.cmpfiles(first, second, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    assert (first / "manifest.csv").read_bytes() != (other / "manifest.csv").read_bytes()


def test_regenerating_into_a_cohort_folder_replaces_it(tmp_path: Path) -> None:
    out = generate_cohort(tmp_path / "c", n_cases=3, seed=1, **SMALL)
    generate_cohort(out, n_cases=2, seed=2, **SMALL)
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["case0001", "case0002"]


def test_refuses_unrelated_folder_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        generate_cohort(tmp_path, n_cases=1)
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(DataError, match="unknown sample-data option"):
        generate_cohort(tmp_path / "x", n_cases=1, lesion_contrast=3)
    with pytest.raises(DataError, match="report_agreement"):
        generate_cohort(tmp_path / "y", n_cases=1, report_agreement=1.5)


def test_signal_options_change_what_each_modality_carries(tmp_path: Path) -> None:
    options = {**SMALL, "report_agreement": 0.0, "lesion_visible_prob": 0.0}
    cohort = generate_cohort(tmp_path / "hard", n_cases=8, seed=3, **options)
    for row in read_manifest(cohort):
        mask = np.asarray(nib.load(cohort / row["lesion_mask"]).dataobj)
        assert not mask.any()  # no lesion drawn, even for lesion cases
        says_nodule = re.search(r"(?<![\d.])\d+ mm", row["report_text"]) is not None
        assert says_nodule == (row["label"] == "0")  # every report contradicts its label

    faint = generate_cohort(tmp_path / "faint", n_cases=4, seed=3, lesion_contrast_hu=100, **SMALL)
    for row in read_manifest(faint):
        if row["label"] == "1":
            hu = np.asarray(nib.load(faint / row["nifti"]).dataobj)
            mask = np.asarray(nib.load(faint / row["lesion_mask"]).dataobj).astype(bool)
            assert -770 <= hu[mask].mean() <= -730


def _age_gap(cohort: Path) -> float:
    rows = [r for r in read_manifest(cohort) if r["age"]]
    ages = {label: [int(r["age"]) for r in rows if r["label"] == label] for label in "01"}
    return float(np.mean(ages["1"]) - np.mean(ages["0"]))


def test_clinical_signal_strength(tmp_path: Path) -> None:
    strong = generate_cohort(tmp_path / "s", n_cases=60, seed=5, clinical_signal=2.0, **SMALL)
    none = generate_cohort(tmp_path / "n", n_cases=60, seed=5, clinical_signal=0.0, **SMALL)
    assert _age_gap(strong) > 10
    assert abs(_age_gap(none)) < 6
    rows = read_manifest(strong)
    missing = sum(r[f] == "" for r in rows for f in ("age", "sex", "smoking", "crp"))
    assert 0.03 <= missing / (4 * len(rows)) <= 0.2


def test_cli_writes_cohort(tmp_path: Path) -> None:
    from medplug.cli.main import app

    result = CliRunner().invoke(app, ["sample-data", str(tmp_path / "cli"), "--cases", "2"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "cli")) == 2
    bad = CliRunner().invoke(
        app, ["sample-data", str(tmp_path / "cli2"), "--report-agreement", "2"]
    )
    assert bad.exit_code == 2
