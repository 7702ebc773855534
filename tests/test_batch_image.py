"""``medplug batch`` end to end with the real image plugin and a demo model trained here.

The demo model is trained in the test session on the generated cohort through
``medplug train image`` (few epochs: the point is the pipeline, not accuracy).
The batch must give every study the same prediction as the plugin's own
one-case ``predict`` on the same DICOM folder, and a valid SR and Grad-CAM Parametric Map.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from batch_support import dciodvfy_errors, tool

from medplug.ingest import load_case
from medplug.registry import discover, load_plugin

PLUGIN = "image-classifier"
pytestmark = pytest.mark.skipif(
    not any(entry.name == PLUGIN and entry.ok for entry in discover()),
    reason="the image-classifier plugin is not installed",
)


@pytest.fixture(scope="module")
def image_model(sample_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / PLUGIN
    command = [sys.executable, "-m", "medplug.cli.main", "train", "image",
               "--data", str(sample_cohort / "manifest.csv"), "--out", str(out),
               "--config", "demo", "--epochs", "2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_batch_with_the_image_plugin_matches_its_own_predict(
    sample_cohort: Path, image_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medplug.cli.main", "batch", str(sample_cohort / "cases"),
               "--plugin", PLUGIN, "--model", str(image_model), "--out", str(out),
               "--manifest", str(sample_cohort / "manifest.csv"), "--workers", "1",
               "--batch-size", "5", "--no-progress"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

    with (sample_cohort / "manifest.csv").open(newline="") as handle:
        rows = {row["study_uid"]: row for row in csv.DictReader(handle)}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["study_uid"] for r in records) == sorted(rows)
    plugin = load_plugin(PLUGIN, image_model)
    for number, record in enumerate(records):
        assert record["status"] == "ok", record["errors"]
        (res,) = record["results"]
        assert res["plugin"] == PLUGIN and res["version"] == plugin.info.version
        batched = res["prediction"]["probabilities"]
        assert set(batched) == set(plugin.info.labels)
        if number < 4:  # predict_batch in the batch == the plugin's predict on the folder
            case = load_case(sample_cohort / rows[record["study_uid"]]["dicom_dir"])
            alone = plugin.predict(case).probabilities
            np.testing.assert_allclose(
                [batched[k] for k in sorted(alone)], [alone[k] for k in sorted(alone)], atol=1e-4
            )
        files = record["provenance"]["files"]
        assert set(files) == {"sr", f"heatmap:{PLUGIN}", "fhir"}
        sr = pydicom.dcmread(out / files["sr"])
        assert sr.StudyInstanceUID == record["study_uid"]
        assert PLUGIN in str(sr) and plugin.info.version in str(sr)
        pm = pydicom.dcmread(out / files[f"heatmap:{PLUGIN}"])  # the Grad-CAM, every slice
        assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
        assert pm.StudyInstanceUID == record["study_uid"]
        assert int(pm.NumberOfFrames) == record["provenance"]["instances"]
        assert pm.pixel_array.max() == pytest.approx(1.0)

    if tool("dciodvfy"):
        for record in records[:3]:
            for name, path in record["provenance"]["files"].items():
                if name != "fhir":  # JSON, validated in test_fhir / test_batch
                    assert dciodvfy_errors(out / path) == [], path


def test_no_heatmaps_skips_the_explanation_itself(
    sample_cohort: Path, image_model: Path, tmp_path: Path
) -> None:
    """--no-heatmaps: no heatmap object, and no Grad-CAM computed only to be dropped."""
    source = tmp_path / "source"
    shutil.copytree(sample_cohort / "cases" / "case0001" / "dicom", source / "a")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medplug.cli.main", "batch", str(source),
               "--plugin", PLUGIN, "--model", str(image_model), "--out", str(out),
               "--workers", "0", "--no-heatmaps", "--no-progress"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record["errors"]
    assert set(record["provenance"]["files"]) == {"sr", "fhir"}
    prediction = record["results"][0]["prediction"]
    assert prediction["explanation"] is None
