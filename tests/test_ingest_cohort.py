"""The generated sample cohort: DICOM series (shuffled, compressed) equal their NIfTI twins."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medplug.ingest import load_case, load_image, scan_folder


def test_every_case_dicom_matches_its_nifti(sample_cohort: Path) -> None:
    rows = list(csv.DictReader((sample_cohort / "manifest.csv").open()))
    syntaxes = set()
    for row in rows:
        dicom = load_image(sample_cohort / row["dicom_dir"])
        nifti = load_image(sample_cohort / row["nifti"])
        np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-3, err_msg=row["case_id"])
        np.testing.assert_allclose(dicom.array, nifti.array, atol=0.5, err_msg=row["case_id"])
        assert dicom.series_uid == row["series_uid"]
        syntaxes.update(scan_folder(sample_cohort / row["dicom_dir"]).series[0].transfer_syntaxes)
    assert len(syntaxes) > 1, "the cohort should include compressed series"


def test_load_case_reads_report_and_clinical(sample_cohort: Path) -> None:
    row = next(csv.DictReader((sample_cohort / "manifest.csv").open()))
    case = load_case(
        sample_cohort / row["dicom_dir"],
        case_id=row["case_id"],
        report=sample_cohort / row["report_path"],
        clinical='{"age": 61, "sex": "F", "smoking": null}',
    )
    assert case.has("image") and case.has("text") and case.has("tabular")
    assert case.report == (sample_cohort / row["report_path"]).read_text()
    assert case.clinical == {"age": 61, "sex": "F", "smoking": None}
