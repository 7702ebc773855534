"""ONNX Runtime for the image plugin's plain forward pass, where it pays.

One case through the small demo network runs 3-8x faster in ONNX Runtime than
in torch; from two cases up torch batches as well (benchmarks/results/startup.md).
So ORT serves single-case predictions *without* an explanation; Grad-CAM needs
torch's forward and backward, and training and evaluation stay in torch.

``model.onnx`` is exported when a model folder is saved (if ``onnxruntime`` is
installed), checked against torch on random inputs of the model's size, and
hashed in ``medplug.json`` like every weight file, so verification and signing
cover it. The bytes ORT runs are re-hashed against that record when the
session is built. ``MEDPLUG_BACKEND`` picks the backend: ``torch``, ``onnx``
(every batch size; a clear error when it cannot be used) or ``auto`` (the
default: ORT for one case when installed, ``model.onnx`` is present and no
explanation is asked).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medplug.errors import InputError, ModelFileError
from medplug.model_folder import CONFIG_NAME, read_config, write_config
from medplug_image.config import ImageModelConfig
from medplug_image.networks import LogitsAndEmbedding

ONNX_NAME = "model.onnx"
BACKEND_ENV = "MEDPLUG_BACKEND"
BACKENDS = ("torch", "onnx", "auto")
# Largest batch ``auto`` sends to ORT: 3-8x faster forward for one case, no steady
# gain from 2 cases up (benchmarks/results/startup.md), where torch batches well.
AUTO_MAX_BATCH = 1
EXPORT_TOLERANCE = 1e-4  # max |logit difference| torch vs ORT accepted at export
INSTALL_HINT = "pip install 'medplug[onnx]' (onnx and onnxruntime)"

log = logging.getLogger("medplug.models")


def backend_choice() -> str:
    """``MEDPLUG_BACKEND`` (``torch``, ``onnx`` or ``auto``; ``auto`` when unset)."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise InputError(f"{BACKEND_ENV}={value!r}: use one of {', '.join(BACKENDS)}")
    return value


def ort_available() -> bool:
    """True when onnxruntime can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def export_onnx(model: nn.Module, config: ImageModelConfig, folder: Path) -> str:
    """Write ``folder/model.onnx`` and check it against torch; returns the file name.

    Raises ``ModelFileError`` (and leaves no file) if ORT's logits differ from
    torch's by more than ``EXPORT_TOLERANCE`` on random inputs.
    """
    path = Path(folder) / ONNX_NAME
    wrapper = LogitsAndEmbedding(model.eval()).eval()
    example = torch.randn(2, config.in_channels, *config.spatial_size)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in torch 2.9+, still shipped in 2.13;
            # the dynamo exporter would add onnxscript as a dependency
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=False,  # TorchScript exporter: no onnxscript needed, dynamic batch works
                input_names=["image"],
                output_names=["logits", "embedding"],
                dynamic_axes={
                    "image": {0: "batch"},
                    "logits": {0: "batch"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
            )
        difference = check_equivalence(model, path.read_bytes(), config)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    log.info("%s: exported, max |logit diff| vs torch %.2g", path, difference)
    return ONNX_NAME


def check_equivalence(
    model: nn.Module, onnx_bytes: bytes, config: ImageModelConfig, batches: tuple[int, ...] = (1, 3)
) -> float:
    """Max |logit| difference torch vs ORT on random inputs; raises past the tolerance.

    Inputs are uniform in [0, 1), the range the intensity window maps scans to.
    The bound is ``EXPORT_TOLERANCE`` for logits up to 1 in size and relative
    beyond (float32 rounding grows with the logits' magnitude).
    """
    session = OrtForward(onnx_bytes, threads=1)
    generator = torch.Generator().manual_seed(0)
    worst, scale = 0.0, 1.0
    for batch in batches:
        images = torch.rand(batch, config.in_channels, *config.spatial_size, generator=generator)
        with torch.inference_mode():
            expected = model.eval()(images).float().numpy()
        logits, _ = session(images.numpy())
        worst = max(worst, float(np.abs(logits - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    if not worst <= EXPORT_TOLERANCE * scale:
        raise ModelFileError(
            f"ONNX export of {config.network} differs from torch by {worst:.3g} "
            f"(> {EXPORT_TOLERANCE} x {scale:.3g}); not storing {ONNX_NAME}"
        )
    return worst


class OrtForward:
    """An ONNX Runtime session returning (logits, embedding) as float32 arrays."""

    def __init__(self, onnx_bytes: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: on a shared box (and next to MONAI's
        # preprocessing in the same process) spinning threads steal the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initialisers are noise
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.threads = threads

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        logits, embedding = self.session.run(["logits", "embedding"], {"image": images})
        return logits, embedding


def load_ort_forward(folder: Path, hashes: dict[str, Any]) -> OrtForward:
    """A session on the folder's verified ``model.onnx``; the bytes run are the bytes hashed."""
    from medplug.threads import current_threads

    path = Path(folder) / ONNX_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc})") from exc
    expected = hashes.get(ONNX_NAME)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelFileError(
            f"{path}: SHA-256 {actual[:12]}… does not match {str(expected)[:12]}… recorded "
            f"in {CONFIG_NAME}; the file was modified or corrupted, refusing to load"
        )
    try:
        return OrtForward(data, threads=current_threads())
    except Exception as exc:  # onnxruntime's own errors on a malformed graph
        raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc


def add_onnx_to_folder(folder: str | Path) -> Path:
    """Export ``model.onnx`` into an existing image model folder and re-hash ``medplug.json``.

    For folders saved before ONNX export or without onnxruntime. The folder is
    verified first; a signed folder must be signed again afterwards.
    """
    from medplug_image import PLUGIN_NAME
    from medplug_image.plugin import ImageClassifierPlugin

    folder = Path(folder)
    if not ort_available():
        raise InputError(f"exporting {ONNX_NAME} needs onnxruntime: {INSTALL_HINT}")
    stored = read_config(folder, expected_plugin=PLUGIN_NAME)
    plugin = ImageClassifierPlugin.from_pretrained(folder)
    (folder / ONNX_NAME).unlink(missing_ok=True)
    name = export_onnx(plugin.model, plugin.config, folder)
    hashed = [n for n in stored.get("file_sha256", {}) if n != ONNX_NAME] + [name]
    stored.pop("file_sha256", None)
    write_config(folder, stored, hashed)
    return folder / name
