"""From labelled data to a self-describing model folder: load, train, calibrate, save."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medplug.errors import MedplugError
from medplug.evaluation import binary_metrics
from medplug.model_folder import save_weights, sha256_file, write_config
from medplug_image import PLUGIN_NAME, PLUGIN_VERSION
from medplug_image.calibrate import fit_calibration
from medplug_image.config import ImageModelConfig
from medplug_image.datasets import LabelledImages, is_npz, read_manifest, read_npz, split_train_val
from medplug_image.loop import TrainResult, to_tensors, train_model
from medplug_image.onnx_backend import INSTALL_HINT, export_onnx, ort_available
from medplug_image.plugin import ImageClassifierPlugin


def load_splits(
    data: Path, config: ImageModelConfig, image_column: str | None = None
) -> tuple[LabelledImages, LabelledImages]:
    """Train and validation data from an .npz (its splits) or a manifest CSV."""
    if is_npz(data):
        return read_npz(data, "train", config), read_npz(data, "val", config)
    labelled = read_manifest(data, config, image_column)
    not_test = np.flatnonzero(np.asarray(labelled.splits) != "test")
    return split_train_val(labelled.subset(not_test), config.val_fraction, config.seed)


def data_fingerprint(data: Path, train: LabelledImages, val: LabelledImages) -> dict[str, Any]:
    """Enough to tell later which data a model saw, without storing any of it."""
    digest = hashlib.sha256()
    for case_id in train.case_ids + val.case_ids:
        digest.update(case_id.encode() + b"\0")
    return {
        "file": Path(data).name,
        "file_sha256": sha256_file(Path(data)),
        "case_ids_sha256": digest.hexdigest(),
        "n_train": len(train),
        "n_val": len(val),
        "train_label_counts": np.bincount(train.labels).tolist(),
        "val_label_counts": np.bincount(val.labels).tolist(),
    }


def fit_model_folder(
    data: Path,
    out: Path,
    config: ImageModelConfig,
    image_column: str | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[Path, TrainResult, dict[str, Any]]:
    """Train on ``data``, calibrate on its validation split and write ``out``."""
    train, val = load_splits(Path(data), config, image_column)
    result = train_model(config, to_tensors(train, config), to_tensors(val, config), on_epoch)
    assert result.val_logits is not None
    calibration = fit_calibration(result.val_logits, val.labels)
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "best_epochs": result.best_epochs,
        "train_seconds": result.seconds,
    }
    if config.num_classes == 2 and len(np.unique(val.labels)) == 2:
        probs = calibration.probabilities(result.val_logits)[:, 1]
        metrics["validation"] = binary_metrics(val.labels, probs, calibration.threshold, n_boot=200)
    info = ImageClassifierPlugin.info_for(config, metrics)
    stored = {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "info": info.to_dict(),
        "image_config": config.to_dict(),
        "calibration": calibration.to_dict(),
        "training": {
            "data": data_fingerprint(Path(data), train, val),
            "history": result.history,
            "best_epochs": result.best_epochs,
            "seconds": result.seconds,
        },
        "metrics": metrics,
    }
    folder = save_image_model(Path(out), result.model, config, stored)
    return folder, result, metrics


log = logging.getLogger("medplug.models")


def save_image_model(folder: Path, model: Any, config: ImageModelConfig, stored: dict) -> Path:
    """Weights, ``model.onnx`` (when onnxruntime is installed) and ``medplug.json``.

    The ONNX file is optional: an export that fails or does not match torch is
    logged and left out, and the model serves with torch as before.
    """
    hashed = [save_weights(folder, model.state_dict())]
    if ort_available():
        try:
            hashed.append(export_onnx(model, config, folder))
        except (MedplugError, RuntimeError, ValueError) as exc:
            log.warning("%s: no ONNX export, torch only (%s)", folder, exc)
    else:
        log.info("%s: onnxruntime not installed, no model.onnx (%s)", folder, INSTALL_HINT)
    write_config(folder, stored, hashed)
    return folder
