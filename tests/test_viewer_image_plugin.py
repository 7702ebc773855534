"""End to end with the built-in ``image-classifier``: a demo model trained here on the
generated cohort, predicted through the REST API and through the napari dock widget."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from viewer_support import ensure_display

pytest.importorskip("medplug_image")
ensure_display()  # before napari creates its QApplication

from medplug.contract import Prediction  # noqa: E402
from medplug.serve import ServeSettings, create_app  # noqa: E402

PLUGIN = "image-classifier"
TOKEN = "image-e2e-token-0123456789"


@pytest.fixture(scope="module")
def image_models(sample_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo configuration, trained for a few epochs: enough to run, not to be good."""
    models = tmp_path_factory.mktemp("image_models")
    subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "train", "image",
         "--data", str(sample_cohort / "manifest.csv"), "--config", "demo",
         "--epochs", "2", "--out", str(models / PLUGIN)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return models


@pytest.fixture(scope="module")
def first_case(sample_cohort: Path) -> dict[str, str]:
    with (sample_cohort / "manifest.csv").open() as handle:
        return next(csv.DictReader(handle))


def test_rest_api_predicts_a_sample_study_with_the_image_plugin(
    image_models: Path, sample_cohort: Path, first_case: dict[str, str]
) -> None:
    client = TestClient(create_app(ServeSettings(token=TOKEN, models_dir=image_models)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((sample_cohort / first_case["dicom_dir"]).iterdir()):
            archive.write(path, f"study/{path.name}")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    files = {"files": ("study.zip", buffer.getvalue(), "application/zip")}
    response = client.post(f"/predict/{PLUGIN}", headers=headers, files=files)
    assert response.status_code == 200, response.text
    prediction = Prediction.from_json(response.json())
    assert prediction.label in ("no_lesion", "lesion")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    nifti = np.asarray(__import__("nibabel").load(sample_cohort / first_case["nifti"]).dataobj)
    assert prediction.explanation.heatmap.shape == nifti.shape
    png = client.post(f"/predict/{PLUGIN}?output=heatmap", headers=headers, files=files)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_napari_widget_overlays_the_image_plugin_gradcam(
    image_models: Path,
    sample_cohort: Path,
    first_case: dict[str, str],
    make_napari_viewer,
    qtbot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDPLUG_MODELS", str(image_models))
    viewer = make_napari_viewer()
    image = viewer.open(str(sample_cohort / first_case["dicom_dir"]), plugin="medplug")[0]
    _, widget = viewer.window.add_plugin_dock_widget("medplug", "medplug predict")
    widget.plugin_box.setCurrentText(PLUGIN)
    widget.run()
    name = f"{PLUGIN} Grad-CAM"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=120_000)
    overlay = viewer.layers[name]
    assert overlay.data.shape == image.data.shape
    np.testing.assert_allclose(overlay.scale, image.scale)
    np.testing.assert_allclose(overlay.affine.affine_matrix, image.affine.affine_matrix)
    assert overlay.opacity == pytest.approx(0.5) and float(overlay.data.max()) > 0
    assert "%" in widget.result.text()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=10_000)
