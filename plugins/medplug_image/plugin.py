"""``image-classifier``: a MONAI CNN for 2D or 3D scans behind medplug's predict contract.

Predictions carry calibrated probabilities, the label at the stored operating
point, the penultimate-layer embedding (for fusion) and a Grad-CAM heatmap in
the input's own geometry. ``predict_batch`` runs one forward pass for all
cases; a case that cannot be used gets a Prediction with no label and the
reason in ``error``, so one bad case never stops a batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.data import MetaTensor

from medplug.contract import (
    Case,
    Explanation,
    InputSpec,
    Plugin,
    PluginInfo,
    Prediction,
)
from medplug.errors import DataError, InputError, MedplugError, ModelFileError
from medplug.model_folder import WEIGHTS_NAME, load_model_folder
from medplug.registry import DECLARATION_NAME, read_declaration
from medplug_image import PLUGIN_NAME
from medplug_image.calibrate import Calibration
from medplug_image.config import ImageModelConfig
from medplug_image.datasets import LabelledImages, is_npz, read_manifest, read_npz
from medplug_image.gradcam import EnsembleExplainer
from medplug_image.networks import LogitsAndEmbedding, build_network
from medplug_image.onnx_backend import (
    AUTO_MAX_BATCH,
    INSTALL_HINT,
    ONNX_NAME,
    OrtForward,
    backend_choice,
    load_ort_forward,
    ort_available,
)
from medplug_image.preprocessing import build_preprocess, invert_to_input, preprocess_volume


@dataclass
class _Prepared:
    """One usable case after preprocessing."""

    case: Case
    tensor: MetaTensor


class ImageClassifierPlugin(Plugin):
    """Classify a scan with a MONAI network; explain it with Grad-CAM."""

    name: ClassVar[str] = PLUGIN_NAME

    def __init__(
        self,
        model: torch.nn.Module,
        config: ImageModelConfig,
        calibration: Calibration,
        info: PluginInfo,
        model_sha256: str | None = None,
        explain: bool = True,
        folder: Path | None = None,
        file_sha256: dict[str, str] | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.calibration = calibration
        self.info = info
        self.model_sha256 = model_sha256
        self.explain = explain
        self.transform = build_preprocess(config)
        self._explainer: EnsembleExplainer | None = None
        # ONNX Runtime for forward passes without explanation (see onnx_backend).
        self.backend = backend_choice()
        self._folder = folder
        self._file_sha256 = file_sha256 or {}
        self._ort: OrtForward | None = None
        if self.backend == "onnx":
            self._check_onnx_usable()

    # ----------------------------------------------------------------- description

    @classmethod
    def describe(cls) -> PluginInfo:
        # The static declaration next to this module: `medplug plugins` reads the same
        # file without importing torch or MONAI.
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    @classmethod
    def info_for(
        cls, config: ImageModelConfig, metrics: dict[str, Any] | None = None
    ) -> PluginInfo:
        """The info of a trained model: the generic description made specific."""
        info = cls.describe()
        info.labels = list(config.labels)
        info.metrics = metrics or {}
        info.inputs["image"] = InputSpec(
            kind="image",
            modality=config.modality,
            spatial_dims=config.spatial_dims,
            spatial_size=list(config.spatial_size),
            spacing=list(config.spacing) if config.spacing else None,
            intensity_window=list(config.intensity_window) if config.intensity_window else None,
            num_channels=config.in_channels,
            description=f"{config.spatial_dims}D image, preprocessed by the stored MONAI chain",
        )
        return info

    # ----------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, explain: bool = True) -> ImageClassifierPlugin:
        """Load a model folder; hashes are checked and nothing is unpickled."""
        state, stored = load_model_folder(Path(model_dir), expected_plugin=PLUGIN_NAME)
        try:
            config = ImageModelConfig.from_dict(stored["image_config"])
            calibration = Calibration(**stored.get("calibration", {}))
            info = PluginInfo.from_dict(stored["info"])
        except (KeyError, TypeError, DataError) as exc:
            raise ModelFileError(f"{model_dir}: incomplete image model config ({exc})") from exc
        model = build_network(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"{model_dir}: weights do not fit {config.network} ({str(exc)[:200]})"
            ) from exc
        hashes = stored.get("file_sha256", {})
        return cls(
            model,
            config,
            calibration,
            info,
            model_sha256=hashes.get(WEIGHTS_NAME),
            explain=explain,
            folder=Path(model_dir),
            file_sha256=hashes,
        )

    def _check_onnx_usable(self) -> None:
        """``MEDPLUG_BACKEND=onnx`` asks for ORT: say why it cannot be used, up front."""
        if not ort_available():
            raise ModelFileError(f"MEDPLUG_BACKEND=onnx needs onnxruntime: {INSTALL_HINT}")
        if self._folder is None or ONNX_NAME not in self._file_sha256:
            raise ModelFileError(
                f"{self._folder}: MEDPLUG_BACKEND=onnx but the model folder has no hashed "
                f"{ONNX_NAME}; re-save it with onnxruntime installed, or run "
                "medplug_image.onnx_backend.add_onnx_to_folder on it"
            )

    def uses_onnx(self, batch: int) -> bool:
        """Whether a forward pass of ``batch`` cases runs in ONNX Runtime."""
        if self.backend == "torch" or self.explain or ONNX_NAME not in self._file_sha256:
            return False
        if self.backend == "auto" and (batch > AUTO_MAX_BATCH or not ort_available()):
            return False
        return self._folder is not None

    # ----------------------------------------------------------------- prediction

    def _predict(self, case: Case) -> Prediction:
        prepared = self._prepare(case)  # raises a clear InputError on a bad case
        return self._predict_prepared([prepared])[0]

    def predict_batch(self, cases: Sequence[Case]) -> list[Prediction]:
        """One forward pass for every usable case; unusable ones carry their error."""
        started = time.perf_counter()
        results: list[Prediction | None] = [None] * len(cases)
        prepared, positions = [], []
        for position, case in enumerate(cases):
            try:
                self.check_case(case)
                prepared.append(self._prepare(case))
                positions.append(position)
            except MedplugError as exc:
                results[position] = self.failed_prediction(case, exc)
        if prepared:
            for position, prediction in zip(
                positions, self._predict_prepared(prepared), strict=True
            ):
                results[position] = prediction
        per_case = (time.perf_counter() - started) / max(len(cases), 1)
        for prediction in results:
            assert prediction is not None
            prediction.elapsed_s = prediction.elapsed_s or per_case
        return results  # type: ignore[return-value]

    def embed(self, case: Case) -> np.ndarray:
        self.check_case(case)
        return self.embed_batch([case])[0]

    def embed_batch(self, cases: Sequence[Case]) -> list[np.ndarray]:
        prepared = [self._prepare(case) for case in cases]
        _, embeddings = self._forward(torch.stack([p.tensor.as_tensor() for p in prepared]))
        return list(embeddings)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, data: Path, out_dir: Path) -> dict[str, Any]:
        """Figures on labelled data (.npz test split, or a manifest's test rows or all rows)."""
        # scikit-learn and the training code: only for evaluation, not for predict.
        from medplug.evaluation import binary_metrics, write_report
        from medplug_image.loop import predict_logits

        if self.config.num_classes != 2:
            raise DataError("evaluation figures are defined for binary models only")
        labelled = self.load_labelled(Path(data))
        images = torch.stack(
            [
                preprocess_volume(volume, self.transform, self.config, case_id).as_tensor()
                for volume, case_id in zip(labelled.volumes, labelled.case_ids, strict=True)
            ]
        )
        logits = predict_logits(self.model, images, tta_flips=self.config.tta_flips)
        probs = self.calibration.probabilities(logits)[:, 1]
        metrics = binary_metrics(labelled.labels, probs, threshold=self.calibration.threshold)
        metrics["temperature"] = self.calibration.temperature
        metrics["data"] = str(data)
        write_report(out_dir, labelled.labels, probs, metrics)
        return metrics

    def load_labelled(self, data: Path) -> LabelledImages:
        if is_npz(data):
            return read_npz(data, "test", self.config)
        labelled = read_manifest(data, self.config)
        test_rows = np.flatnonzero(np.asarray(labelled.splits) == "test")
        return labelled.subset(test_rows) if len(test_rows) else labelled

    # ----------------------------------------------------------------- internals

    def _prepare(self, case: Case) -> _Prepared:
        if case.image is None:
            raise InputError("no image to classify", case_id=case.case_id)
        tensor = preprocess_volume(case.image, self.transform, self.config, case.case_id)
        return _Prepared(case=case, tensor=tensor)

    def _forward(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Logits (averaged over test-time flips) and embeddings of the plain view."""
        if self.uses_onnx(len(images)):
            return self._forward_onnx(images.numpy())
        return self._forward_torch(images)

    def _forward_onnx(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ort is None:
            assert self._folder is not None
            self._ort = load_ort_forward(self._folder, self._file_sha256)
        logits, embeddings = self._ort(images)
        if self.config.tta_flips:
            views = [logits] + [
                self._ort(np.flip(images, axis=2 + axis))[0] for axis in self.config.tta_flips
            ]
            logits = np.stack(views).mean(0)
        return logits, embeddings

    @torch.inference_mode()
    def _forward_torch(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = LogitsAndEmbedding(self.model)(images)
        if self.config.tta_flips:
            views = [logits] + [
                self.model(torch.flip(images, dims=[2 + axis])) for axis in self.config.tta_flips
            ]
            logits = torch.stack(views).mean(0)
        return logits.float().numpy(), embeddings.float().numpy()

    def _heatmaps(self, images: torch.Tensor, classes: np.ndarray) -> list[torch.Tensor]:
        if self._explainer is None:
            self._explainer = EnsembleExplainer(self.model, self.config)
        maps: list[torch.Tensor | None] = [None] * len(images)
        for class_idx in np.unique(classes):
            members = np.flatnonzero(classes == class_idx)
            heats = self._explainer(images[members], int(class_idx))
            for member, heat in zip(members, heats, strict=True):
                maps[member] = heat
        return maps  # type: ignore[return-value]

    def _predict_prepared(self, prepared: list[_Prepared]) -> list[Prediction]:
        images = torch.stack([p.tensor.as_tensor() for p in prepared])
        backend = "onnxruntime" if self.uses_onnx(len(images)) else "torch"
        logits, embeddings = self._forward(images)
        probs = self.calibration.probabilities(logits)
        labels = self.config.labels
        if len(labels) == 2:
            predicted = (probs[:, 1] >= self.calibration.threshold).astype(int)
            explained_class = np.ones(len(prepared), dtype=int)  # evidence for the finding
        else:
            predicted = probs.argmax(axis=1)
            explained_class = predicted
        heatmaps = self._heatmaps(images, explained_class) if self.explain else None
        predictions = []
        for i, item in enumerate(prepared):
            image = item.case.image
            assert image is not None
            explanation = None
            if heatmaps is not None:
                heatmap = invert_to_input(
                    heatmaps[i], item.tensor, self.transform, image.array.shape, image.affine
                )
                explanation = Explanation(heatmap=heatmap, heatmap_affine=np.asarray(image.affine))
            predictions.append(
                Prediction(
                    plugin=self.name,
                    plugin_version=self.info.version,
                    case_id=item.case.case_id,
                    label=labels[int(predicted[i])],
                    probabilities={
                        name: float(p) for name, p in zip(labels, probs[i], strict=True)
                    },
                    embedding=embeddings[i],
                    explanation=explanation,
                    provenance=self._provenance(item.case, backend),
                )
            )
        return predictions

    def _provenance(self, case: Case, backend: str = "torch") -> dict[str, Any]:
        image = case.image
        assert image is not None
        return {
            "backend": backend,
            # the weights file's hash (provenance); the model's identity is model_identity
            "model_sha256": self.model_sha256,
            "network": self.config.network,
            "temperature": self.calibration.temperature,
            "threshold": self.calibration.threshold,
            "input_study_uid": image.study_uid,
            "input_series_uid": image.series_uid,
            "input_source": image.source,
            "input_shape": list(image.array.shape),
        }

    def failed_prediction(self, case: Case, error: MedplugError) -> Prediction:
        prediction = super().failed_prediction(case, error)
        prediction.provenance = {"model_sha256": self.model_sha256}
        return prediction
