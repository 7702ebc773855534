"""The napari plugin, headless: manifest wiring, reader geometry, dock widget with overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from viewer_support import (
    ensure_display,
    install_bright_spot,
    phantom,
    ras_affine,
    write_bright_spot_model,
    write_dicom_series,
    write_nifti,
)

ensure_display()  # before napari creates its QApplication
napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from medplug.napari_plugin.reader import VOLUME_KEY, get_reader  # noqa: E402

BLOB_CENTRE_IJK = (28, 10, 7)


@pytest.fixture(scope="module")
def bright_spot_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_bright_spot(tmp_path_factory.mktemp("bright_spot"))


@pytest.fixture
def bright_spot(bright_spot_site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test plugin on sys.path and its model under $MEDPLUG_MODELS; returns the model."""
    monkeypatch.syspath_prepend(str(bright_spot_site))
    monkeypatch.setenv("MEDPLUG_MODELS", str(tmp_path / "models"))
    return write_bright_spot_model(tmp_path / "models")


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_series(tmp_path_factory.mktemp("series") / "ct", phantom())


def test_manifest_declares_reader_and_widget() -> None:
    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("medplug")
    assert [r.command for r in manifest.contributions.readers] == ["medplug.get_reader"]
    assert manifest.contributions.readers[0].accepts_directories
    assert [w.display_name for w in manifest.contributions.widgets] == ["medplug predict"]


def test_reader_opens_dicom_series_with_spacing_orientation_and_hu(
    make_napari_viewer, series: Path
) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(str(series), plugin="medplug")
    assert len(layers) == 1
    layer = layers[0]
    # (k, j, i): 12 slices of 32 rows x 40 columns, slider over the slices.
    assert layer.data.shape == (12, 32, 40)
    np.testing.assert_allclose(layer.scale, [2.5, 0.8, 0.7])
    # World = DICOM patient (LPS) mm in (z, y, x) order: voxel 0 sits at the series origin.
    np.testing.assert_allclose(layer.data_to_world((0, 0, 0)), [100.0, 30.0, -12.0], atol=1e-4)
    np.testing.assert_allclose(layer.data_to_world((11, 31, 39)), [127.5, 54.8, 15.3], atol=1e-4)
    volume = layer.metadata[VOLUME_KEY]
    np.testing.assert_allclose(volume.affine, ras_affine(), atol=1e-4)
    i, j, k = BLOB_CENTRE_IJK
    assert layer.data[k, j, i] == pytest.approx(400, abs=1)  # HU, rescale applied
    assert float(np.median(layer.data)) == pytest.approx(40, abs=3)


def test_reader_opens_nifti_and_declines_other_files(make_napari_viewer, tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "ct.nii.gz", phantom())
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="medplug")[0]
    assert layer.name == "ct"
    assert layer.data.shape == (12, 32, 40)
    np.testing.assert_allclose(layer.scale, [2.5, 0.8, 0.7], atol=1e-5)
    (tmp_path / "notes.txt").write_text("not an image")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(path), str(path)]) is None


def test_dock_widget_runs_plugin_and_overlays_gradcam(
    make_napari_viewer, qtbot, series: Path, bright_spot: Path
) -> None:
    viewer = make_napari_viewer()
    image = viewer.open(str(series), plugin="medplug")[0]
    _, widget = viewer.window.add_plugin_dock_widget("medplug", "medplug predict")
    widget.plugin_box.setCurrentText("bright-spot")
    assert widget.model_edit.text() == str(bright_spot)
    widget.report_edit.setPlainText("Streak artifact from dental work.")
    widget.run()
    qtbot.waitUntil(lambda: "bright-spot Grad-CAM" in viewer.layers, timeout=60_000)
    overlay = viewer.layers["bright-spot Grad-CAM"]
    assert overlay.opacity == pytest.approx(0.5)
    assert overlay.data.shape == image.data.shape
    np.testing.assert_allclose(overlay.scale, image.scale)
    np.testing.assert_allclose(overlay.affine.affine_matrix, image.affine.affine_matrix)
    # The hottest heatmap voxel lands on the blob in world coordinates.
    hottest = np.unravel_index(np.argmax(overlay.data), overlay.data.shape)
    i, j, k = BLOB_CENTRE_IJK
    blob_world = np.asarray(image.data_to_world((k, j, i)))
    assert np.linalg.norm(np.asarray(overlay.data_to_world(hottest)) - blob_world) < 5.0
    text = widget.result.text()
    assert "<b>lesion</b>" in text
    assert "report mentions artifacts" in text and "anisotropic voxels" in text
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=10_000)


def test_dock_widget_reports_medplug_errors_as_notifications(
    make_napari_viewer, qtbot, series: Path, bright_spot: Path, tmp_path: Path
) -> None:
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.open(str(series), plugin="medplug")
    _, widget = viewer.window.add_plugin_dock_widget("medplug", "medplug predict")
    widget.plugin_box.setCurrentText("bright-spot")
    widget.model_edit.setText(str(tmp_path / "no-such-model"))
    seen = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: len(notification_manager.records) > seen, timeout=30_000)
    message = str(notification_manager.records[-1].message)
    assert "medplug:" in message and "no model folder" in message
    assert "bright-spot Grad-CAM" not in viewer.layers


def test_sample_case_dicom_and_nifti_layers_coincide(
    make_napari_viewer, sample_cohort: Path
) -> None:
    """The generated cohort's DICOM series and its NIfTI copy land on the same world grid."""
    import csv

    with (sample_cohort / "manifest.csv").open() as handle:
        case = next(csv.DictReader(handle))
    viewer = make_napari_viewer()
    dicom = viewer.open(str(sample_cohort / case["dicom_dir"]), plugin="medplug")[0]
    nifti = viewer.open(str(sample_cohort / case["nifti"]), plugin="medplug")[0]
    assert dicom.data.shape == nifti.data.shape
    np.testing.assert_allclose(dicom.scale, nifti.scale, rtol=1e-4)
    corner = np.array(dicom.data.shape) - 1
    for voxel in (np.zeros(3), corner, corner // 2):
        np.testing.assert_allclose(
            dicom.data_to_world(voxel), nifti.data_to_world(voxel), atol=1e-2
        )
    np.testing.assert_allclose(dicom.data, nifti.data, atol=1.0)
