"""``monai-bundle``: run a MONAI Bundle folder through medplug's predict contract, no code.

``medplug predict|batch|serve --plugin monai-bundle --model BUNDLE_DIR``. The
folder is used as it is: ``configs/metadata.json`` becomes the ``PluginInfo``,
``configs/inference.json`` gives the network, preprocessing, inferer and
postprocessing (``config``), ``models/`` the weights (``network``). One case
runs as one iteration of the bundle's ``SupervisedEvaluator`` would: the
preprocessed dict is collated into a batch of one, the inferer runs the
network, batch and output are decollated and merged, and the postprocessing
runs on that dict. So medplug and ``python -m monai.bundle run`` give the same
numbers (``tests/test_bundle_plugin.py`` checks it to 1e-5).

Outputs: a classification bundle gives class probabilities (the first
probability-like ``pred`` along the postprocessing, else a softmax of the
network output) and a label (the bundle's own discrete decision when its
postprocessing makes one); a segmentation bundle gives a label map on the
input's grid (the bundle's own ``Invertd`` when it has one, else medplug
inverts the preprocessing the same way) as ``Prediction.segmentation``.

Identity: a bundle has no ``medplug.json``, so ``model_identity`` is the
SHA-256 of the manifest of its files (``medplug_bundle.identity``). A bundle's
config is code (``$`` expressions are Python ``eval``, ``_target_`` imports any
callable), so a site that requires signed models (``MEDPLUG_TRUSTED_KEYS``)
refuses bundle folders outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.transforms import Invertd, apply_transform

from medplug.contract import (
    LESION,
    MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    TISSUE,
    Case,
    Explanation,
    ImageVolume,
    Plugin,
    PluginInfo,
    Prediction,
    Segment,
    Segmentation,
)
from medplug.errors import InputError, ModelFileError, PluginError
from medplug.registry import DECLARATION_NAME, read_declaration
from medplug_bundle.gradcam import grad_cam, last_conv_name
from medplug_bundle.identity import folder_identity
from medplug_bundle.monai_bundle import PLUGIN_NAME
from medplug_bundle.monai_bundle.config import BundleConfig, load_config
from medplug_bundle.monai_bundle.metadata import METADATA_PATH, BundleMetadata, read_metadata
from medplug_bundle.monai_bundle.network import load_network
from medplug_bundle.trust import refuse_if_signatures_required

PRED = "pred"  # the key SupervisedEvaluator stores the network output under
LESION_WORDS = ("lesion", "tumor", "tumour", "nodule", "mass", "metastas", "cancer")


@dataclass
class BundleRun:
    """One case through the bundle: the raw network output and the postprocessed dict."""

    network_output: torch.Tensor  # (C, ...) for this case
    network_input: torch.Tensor  # (1, C, *spatial): the preprocessed batch of one
    data: dict[str, Any]  # the merged batch/output dict after postprocessing
    steps: list[torch.Tensor]  # ``pred`` before and after each postprocessing step


class MonaiBundlePlugin(Plugin):
    """A MONAI Bundle folder as a medplug plugin."""

    name: ClassVar[str] = PLUGIN_NAME

    def __init__(
        self,
        folder: Path,
        metadata: BundleMetadata,
        config: BundleConfig,
        network: torch.nn.Module,
        weights: Path,
        spatial_dims: int,
        identity: str,
        manifest: dict[str, str],
    ) -> None:
        self.folder = folder
        self.metadata = metadata
        self.config = config
        self.network = network
        self.weights = weights
        self.spatial_dims = spatial_dims
        self.info = metadata.plugin_info(PLUGIN_NAME, spatial_dims)
        self.model_identity = identity
        self.manifest = manifest
        self.explain = True  # Grad-CAM for classification bundles with a network_def

    @classmethod
    def describe(cls) -> PluginInfo:
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> MonaiBundlePlugin:
        """Load a bundle folder; the weights are never unpickled."""
        folder = Path(model_dir)
        refuse_if_signatures_required(
            folder, "a MONAI bundle's config runs code that no medplug signature covers"
        )
        metadata = read_metadata(folder)
        config = load_config(folder)
        network, weights = load_network(folder, config.network)
        spatial_dims = metadata.spatial_dims or config.network_spatial_dims
        if spatial_dims not in (2, 3):
            raise ModelFileError(
                f"{folder / METADATA_PATH}: network_data_format.inputs."
                f"{metadata.input_key}.spatial_shape does not say 2D or 3D, nor does "
                "configs/inference.json network_def#spatial_dims"
            )
        identity, manifest = folder_identity(folder)
        return cls(folder, metadata, config, network, weights, spatial_dims, identity, manifest)

    # ----------------------------------------------------------------- running

    def run(self, volume: ImageVolume, case_id: str) -> BundleRun:
        """The bundle's preprocessing, inferer and postprocessing on one volume."""
        config = self.config
        key = config.image_key
        config.reader.serve(volume)
        try:
            data = apply_transform(config.preprocessing, {key: volume.source or case_id})
        except Exception as exc:  # MONAI wraps transform errors in RuntimeError
            raise InputError(
                f"the bundle's preprocessing failed on this image ({_first_line(exc)})",
                case_id=case_id,
            ) from None
        finally:
            config.reader.serve(None)
        batch = list_data_collate([data])
        with torch.no_grad():
            output = config.inferer(batch[key], self.network)
        if isinstance(output, dict | tuple | list):
            raise PluginError(
                f"{config.path}: network returns {type(output).__name__}; medplug runs bundles "
                "whose network returns one tensor"
            )
        self._check_output(output)
        merged = dict(decollate_batch(batch, detach=True)[0])
        merged[PRED] = decollate_batch(output, detach=True)[0]
        steps = [merged[PRED]]
        post = config.postprocessing
        if post is not None:
            for transform in post.transforms:
                merged = apply_transform(transform, merged, post.map_items, post.unpack_items)
                steps.append(merged[PRED])
        return BundleRun(
            network_output=steps[0], network_input=batch[key], data=merged, steps=steps
        )

    def _check_output(self, output: torch.Tensor) -> None:
        expected = self.metadata.num_channels
        where = f"{self.metadata.path}: network_data_format.outputs.{self.metadata.output_key}"
        got = int(output.shape[1]) if output.ndim >= 2 else None
        if got != expected:
            raise PluginError(
                f"{self.metadata.path}: {self.metadata.channels_key} is {expected} but the "
                f"network returns shape {tuple(output.shape)}"
            )
        dims = output.ndim - 2
        if self.metadata.task == "segmentation" and dims != self.spatial_dims:
            raise PluginError(
                f"{where} is a {self.spatial_dims}D segmentation but the network returns "
                f"shape {tuple(output.shape)}"
            )
        if self.metadata.task == "classification" and dims != 0:
            raise PluginError(
                f"{where} is a classification but the network returns shape {tuple(output.shape)}"
            )

    # ----------------------------------------------------------------- predict

    def _predict(self, case: Case) -> Prediction:
        image = case.image
        assert image is not None  # check_case made sure
        volume = self._model_volume(image, case.case_id)
        result = self.run(volume, case.case_id)
        prediction = Prediction(
            plugin=self.name,
            plugin_version=self.info.version,
            case_id=case.case_id,
            label=None,
            provenance=self._provenance(image),
        )
        if self.metadata.task == "classification":
            self._classification(result, prediction)
            if self.explain:
                self._explain(result, image, volume, prediction)
        else:
            self._segmentation(result, image, volume, prediction)
        return prediction

    def _model_volume(self, image: ImageVolume, case_id: str) -> ImageVolume:
        """The volume as the network sees it: a single-slice 3D series is a 2D image."""
        if self.spatial_dims == 2 and image.array.ndim == 3 and image.array.shape[-1] == 1:
            return ImageVolume(
                array=image.array[..., 0],
                affine=image.affine,
                modality=image.modality,
                source=image.source,
                meta=image.meta,
            )
        if min(image.array.shape) < 1:
            raise InputError(f"image has an empty shape {image.array.shape}", case_id=case_id)
        return image

    def _classification(self, result: BundleRun, prediction: Prediction) -> None:
        labels = self.metadata.labels
        probabilities = next(
            (step for step in result.steps if _probability_like(step, len(labels))), None
        )
        if probabilities is None:
            logits = result.network_output.float().reshape(-1)
            probabilities = (
                torch.sigmoid(logits) if len(labels) == 1 else torch.softmax(logits, dim=0)
            )
            prediction.provenance["probabilities"] = "medplug softmax of the network output"
        else:
            prediction.provenance["probabilities"] = "the bundle's postprocessing"
        values = probabilities.detach().float().reshape(-1).cpu().numpy()
        prediction.probabilities = {name: float(p) for name, p in zip(labels, values, strict=True)}
        index = _discrete_class(result.steps[-1], len(labels))
        if index is None:
            index = int(values.argmax()) if len(labels) > 1 else int(values[0] < 0.5)
        if len(labels) == 1:
            prediction.label = labels[0] if index == 0 else f"not {labels[0]}"
        else:
            prediction.label = labels[index]

    def _segmentation(
        self, result: BundleRun, image: ImageVolume, volume: ImageVolume, prediction: Prediction
    ) -> None:
        pred = result.data[PRED]
        spatial = tuple(volume.array.shape)
        if tuple(pred.shape[1:]) != spatial:
            pred = self._invert(result.data)
        if tuple(pred.shape[1:]) != spatial:
            raise PluginError(
                f"{self.config.path}: postprocessing gives a {tuple(pred.shape[1:])} mask for a "
                f"{spatial} input and the preprocessing cannot be inverted onto the input grid"
            )
        array = torch.as_tensor(pred).detach().float().cpu()
        label_map = array.argmax(0) if array.shape[0] > 1 else torch.round(array[0])
        values = label_map.numpy().astype(np.uint8).reshape(image.array.shape)
        segments = [_segment(value, name) for value, name in enumerate(self.metadata.labels)][1:]
        segmentation = Segmentation(label_map=values, segments=segments)
        prediction.segmentation = segmentation
        present = [s for s in segments if np.any(values == s.value)]
        prediction.label = ", ".join(s.label for s in present) or self.metadata.labels[0]
        for segment in segments:
            prediction.outputs[f"{segment.label}_volume_ml"] = segmentation.volume_ml(
                segment, image.spacing[:3]
            )

    def _explain(
        self, result: BundleRun, image: ImageVolume, volume: ImageVolume, prediction: Prediction
    ) -> None:
        """Grad-CAM of the predicted class on the last convolution, on the input's grid."""
        target = last_conv_name(self.network)
        if target is None or prediction.label not in self.metadata.labels:
            return
        index = self.metadata.labels.index(prediction.label)
        layer = self.network.get_submodule(target)
        heat = grad_cam(self.network, layer, result.network_input.as_tensor(), index)[:1]
        mapped = self._invert({**result.data, PRED: heat}, nearest=False)
        if tuple(mapped.shape[1:]) != tuple(volume.array.shape):
            return
        array = np.asarray(torch.as_tensor(mapped)[0].float().cpu().numpy(), dtype=np.float32)
        prediction.explanation = Explanation(
            heatmap=array.reshape(image.array.shape), heatmap_affine=np.asarray(image.affine)
        )
        prediction.provenance["explanation"] = f"grad-cam on {target}"

    def _invert(self, data: dict[str, Any], nearest: bool = True) -> torch.Tensor:
        """The bundle's preprocessing inverted on ``pred`` (what a bundle's Invertd does)."""
        pred = data[PRED]
        if not isinstance(pred, MetaTensor):
            pred = MetaTensor(pred)
        inverter = Invertd(
            keys=PRED,
            transform=self.config.preprocessing,
            orig_keys=self.config.image_key,
            nearest_interp=nearest,
        )
        return inverter({**data, PRED: pred})[PRED]

    def _provenance(self, image: ImageVolume) -> dict[str, Any]:
        return {
            "bundle": self.metadata.name,
            "bundle_version": self.metadata.version,
            "bundle_identity": self.model_identity,
            "weights": self.weights.relative_to(self.folder).as_posix(),
            "weights_sha256": self.manifest.get(self.weights.relative_to(self.folder).as_posix()),
            "config_steps_dropped": list(self.config.dropped),
            "input_series_uid": image.series_uid,
            "input_source": image.source,
            "input_shape": list(image.array.shape),
        }


def _probability_like(value: Any, classes: int) -> bool:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return False
    if value.numel() != classes or classes < 2:
        return False
    flat = value.detach().float().reshape(-1)
    return bool((flat >= 0).all() and (flat <= 1).all() and abs(float(flat.sum()) - 1) < 1e-4)


def _discrete_class(value: Any, classes: int) -> int | None:
    """The class the bundle's own postprocessing decided (an index or a one-hot), if any."""
    if not isinstance(value, torch.Tensor):
        return None
    flat = value.detach().float().reshape(-1)
    if flat.numel() == 1 and classes > 1 and float(flat[0]).is_integer():
        index = int(flat[0])
        return index if 0 <= index < classes else None
    if flat.numel() == classes > 1 and set(flat.tolist()) <= {0.0, 1.0} and flat.sum() == 1:
        return int(flat.argmax())
    return None


def _segment(value: int, name: str) -> Segment:
    """A bundle label as a coded segment: lesion-like names as lesions, others as tissue."""
    if any(word in name.lower() for word in LESION_WORDS):
        return Segment(value, name, MORPHOLOGICALLY_ABNORMAL_STRUCTURE, LESION)
    return Segment(value, name, TISSUE, TISSUE)


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {(text.splitlines()[0] if text else '')[:200]}"
