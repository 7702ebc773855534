"""Dock widget: pick a medplug plugin, run it on the current image layer, show the answer.

Inference runs in a napari thread worker so the viewer stays responsive. The
Grad-CAM comes back as a semi-transparent layer placed with the same geometry
rules as the image (``geometry.to_layer``), so it sits exactly over it.
"""

from __future__ import annotations

import html
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from napari.utils.transforms import Affine
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medplug.contract import Case, ImageVolume, Plugin, Prediction
from medplug.errors import InputError, MedplugError, PluginError
from medplug.napari_plugin.geometry import from_layer, to_layer
from medplug.napari_plugin.reader import VOLUME_KEY
from medplug.registry import default_model_dir, discover, load_plugin

_loaded: dict[tuple[str, str], Plugin] = {}
_loading = threading.Lock()


def run_plugin(name: str, model_dir: Path, case: Case) -> Prediction:
    """Load (once) and run a plugin; called in a worker thread."""
    key = (name, str(model_dir))
    with _loading:
        if key not in _loaded:
            _loaded[key] = load_plugin(name, model_dir)
        plugin = _loaded[key]
    prediction = plugin.predict(case)
    if prediction.failed:  # a plugin may hand back a failed Prediction instead of raising
        raise PluginError(prediction.error["message"] if prediction.error else "failed")
    return prediction


def layer_volume(layer: Image) -> ImageVolume:
    """The medplug volume behind a layer: the one ingest read, or rebuilt from the layer."""
    volume = layer.metadata.get(VOLUME_KEY)
    if isinstance(volume, ImageVolume):
        return volume
    if layer.rgb:
        raise InputError(f"layer {layer.name!r} is RGB; medplug plugins need a grey-level image")
    data = np.asarray(layer.data, dtype=np.float32)
    inner = Affine(
        scale=layer.scale,
        translate=layer.translate,
        rotate=layer.rotate,
        shear=layer.shear,
        ndim=layer.ndim,
    )
    array, affine = from_layer(data, layer.affine.affine_matrix @ inner.affine_matrix)
    return ImageVolume(array=array, affine=affine, source=f"napari layer {layer.name}")


class PredictWidget(QWidget):
    """Choose a plugin and model folder, add report/clinical fields, press Run."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.plugin_box = QComboBox()
        self.model_edit = QLineEdit()
        self.report_edit = QPlainTextEdit()
        self.report_edit.setPlaceholderText("optional report text")
        self.report_edit.setMaximumHeight(80)
        self.clinical_edit = QLineEdit()
        self.clinical_edit.setPlaceholderText('optional JSON, e.g. {"age": 61}')
        self.run_button = QPushButton("Run on current image")
        self.status = QLabel("")
        self.result = QLabel("")
        self.result.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Plugin", self.plugin_box)
        form.addRow("Model folder", self.model_edit)
        form.addRow("Report", self.report_edit)
        form.addRow("Clinical", self.clinical_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.status)
        layout.addWidget(self.result)
        layout.addStretch()

        for entry in discover():
            if entry.ok:
                self.plugin_box.addItem(entry.name)
        self.plugin_box.currentTextChanged.connect(self._plugin_changed)
        self._plugin_changed(self.plugin_box.currentText())
        self.run_button.clicked.connect(self.run)

    def _plugin_changed(self, name: str) -> None:
        if name:
            self.model_edit.setText(str(default_model_dir(name)))

    def current_image_layer(self) -> Image:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and not active.metadata.get("medplug_heatmap"):
            return active
        images = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not layer.metadata.get("medplug_heatmap")
        ]
        if not images:
            raise InputError("open an image first (File > Open, or drop a DICOM folder)")
        return images[-1]

    def build_case(self) -> Case:
        layer = self.current_image_layer()
        clinical: dict[str, Any] = {}
        text = self.clinical_edit.text().strip()
        if text:
            try:
                clinical = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"clinical fields are not valid JSON ({exc.msg})") from None
            if not isinstance(clinical, dict):
                raise InputError('clinical fields must be a JSON object like {"age": 61}')
        report = self.report_edit.toPlainText().strip() or None
        return Case(layer.name, [layer_volume(layer)], report=report, clinical=clinical)

    def run(self) -> None:
        """Start the plugin in a worker thread; results arrive in ``show``."""
        name = self.plugin_box.currentText()
        try:
            if not name:
                raise InputError("no medplug plugin is installed")
            case = self.build_case()
        except MedplugError as exc:
            self._failed(exc)
            return
        self.run_button.setEnabled(False)
        self.status.setText(f"Running {name}…")
        # Handlers passed at creation: an ``errored`` handler stops napari re-raising
        # the error in the GUI thread; we show it as a notification instead.
        self.worker = create_worker(
            run_plugin,
            name,
            Path(self.model_edit.text()),
            case,
            _connect={
                "returned": lambda prediction: self.show(prediction, case),
                "errored": self._failed,
                "finished": lambda: self.run_button.setEnabled(True),
            },
            _start_thread=True,
        )

    def _failed(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, MedplugError) else f"{type(exc).__name__}: {exc}"
        self.status.setText("Failed.")
        show_error(f"medplug: {message}")

    def show(self, prediction: Prediction, case: Case) -> None:  # type: ignore[override]
        self.status.setText(f"Done in {prediction.elapsed_s:.2f} s.")
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td align='right'>{100 * p:.1f} %</td></tr>"
            for label, p in prediction.probabilities.items()
        )
        warnings = "".join(f"<li>{html.escape(w)}</li>" for w in prediction.warnings)
        self.result.setText(
            f"<b>{html.escape(str(prediction.label))}</b><table>{rows}</table>"
            + (f"<p>Warnings:</p><ul>{warnings}</ul>" if warnings else "")
        )
        self.add_heatmap(prediction, case)

    def add_heatmap(self, prediction: Prediction, case: Case) -> Image | None:
        explanation = prediction.explanation
        if explanation is None or explanation.heatmap is None or case.image is None:
            return None
        affine = (
            explanation.heatmap_affine
            if explanation.heatmap_affine is not None
            else case.image.affine
        )
        geometry = to_layer(np.asarray(explanation.heatmap, dtype=np.float32), affine)
        name = f"{prediction.plugin} Grad-CAM"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        peak = float(geometry.data.max()) or 1.0
        return self.viewer.add_image(
            geometry.data,
            name=name,
            scale=geometry.scale,
            affine=geometry.affine,
            colormap="inferno",
            opacity=0.5,
            blending="additive",
            contrast_limits=(0.0, peak),
            metadata={"medplug_heatmap": True},
        )
