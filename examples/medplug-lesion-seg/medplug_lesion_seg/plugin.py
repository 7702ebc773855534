"""``lesion-seg``: a third-party plugin whose answer is a mask, behind medplug's predict contract.

A prediction carries the lesion ``Segmentation`` on the input image's own grid
(the network runs on a resampled copy; the probability map is mapped back
before thresholding, and by default only the region around the most probable
voxel is kept), P(lesion) as the highest voxel probability, the label
(lesion exactly when the mask is not empty), the lesion volume and, unless
``explain`` is off, the voxel probabilities as the heatmap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from medplug.contract import (
    LESION,
    MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    Case,
    Explanation,
    InputSpec,
    Plugin,
    PluginInfo,
    Prediction,
    Segment,
    Segmentation,
)
from medplug.errors import DataError, InputError, ModelFileError
from medplug.model_folder import WEIGHTS_NAME, load_model_folder
from medplug.registry import DECLARATION_NAME, read_declaration
from torch import nn

from medplug_lesion_seg import LABELS, PLUGIN_NAME
from medplug_lesion_seg.config import LesionSegConfig
from medplug_lesion_seg.network import build_network
from medplug_lesion_seg.postprocess import lesion_mask
from medplug_lesion_seg.transforms import apply_chain, build_chain, to_input_grid

LESION_SEGMENT = Segment(
    value=1, label="lesion", category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE, type=LESION
)


class LesionSegPlugin(Plugin):
    """Segment the lung lesion of a CT volume with a small MONAI UNet."""

    name: ClassVar[str] = PLUGIN_NAME

    def __init__(
        self,
        model: nn.Module,
        config: LesionSegConfig,
        info: PluginInfo,
        model_sha256: str | None = None,
        explain: bool = True,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.info = info
        self.model_sha256 = model_sha256
        self.explain = explain  # serve and batch switch it off when no heatmap is wanted
        self.chain = build_chain(config)

    # ----------------------------------------------------------------- description

    @classmethod
    def describe(cls) -> PluginInfo:
        # The static declaration `medplug plugins` reads without importing torch or MONAI.
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    @classmethod
    def info_for(cls, config: LesionSegConfig, metrics: dict[str, Any] | None = None) -> PluginInfo:
        """The info of a trained model: the declaration with its voxel size and figures."""
        info = cls.describe()
        info.metrics = metrics or {}
        info.inputs["image"] = InputSpec(
            kind="image",
            modality=config.modality,
            spatial_dims=3,
            spacing=list(config.spacing) if config.spacing else None,
            intensity_window=list(config.intensity_window),
            num_channels=1,
            description=info.inputs["image"].description,
        )
        return info

    # ----------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, explain: bool = True) -> LesionSegPlugin:
        """Load a model folder; hashes are checked and nothing is unpickled."""
        state, stored = load_model_folder(Path(model_dir), expected_plugin=PLUGIN_NAME)
        try:
            config = LesionSegConfig.from_dict(stored["lesion_seg_config"])
            info = PluginInfo.from_dict(stored["info"])
        except (KeyError, TypeError, DataError) as exc:
            raise ModelFileError(
                f"{model_dir}: incomplete lesion-seg model config ({exc})"
            ) from exc
        if config.spacing is None:
            raise ModelFileError(f"{model_dir}: lesion-seg model config has no voxel spacing")
        model = build_network(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"{model_dir}: weights do not fit the configured UNet ({str(exc)[:200]})"
            ) from exc
        sha = stored.get("file_sha256", {}).get(WEIGHTS_NAME)
        return cls(model, config, info, model_sha256=sha, explain=explain)

    # ----------------------------------------------------------------- prediction

    def probability_map(self, case: Case) -> np.ndarray:
        """Voxel P(lesion) on the input image's grid (float32, the image's shape)."""
        image = case.image
        if image is None:
            raise InputError("no image to segment", case_id=case.case_id)
        prepared = apply_chain(image, self.chain, case.case_id)
        with torch.inference_mode():
            probabilities = torch.sigmoid(self.model(prepared.as_tensor()[None]))[0]
        return to_input_grid(probabilities, prepared, self.chain, tuple(image.array.shape))

    def _predict(self, case: Case) -> Prediction:
        probabilities = self.probability_map(case)
        image = case.image
        assert image is not None
        mask = lesion_mask(probabilities, self.config.threshold, self.config.single_lesion).astype(
            np.uint8
        )
        segmentation = Segmentation(
            label_map=mask, segments=[LESION_SEGMENT], affine=np.asarray(image.affine)
        )
        p_lesion = float(np.clip(probabilities.max(), 0.0, 1.0))
        explanation = (
            Explanation(heatmap=probabilities, heatmap_affine=np.asarray(image.affine))
            if self.explain
            else None
        )
        return Prediction(
            plugin=self.name,
            plugin_version=self.info.version,
            case_id=case.case_id,
            label=LABELS[1] if mask.any() else LABELS[0],
            probabilities={LABELS[0]: 1.0 - p_lesion, LABELS[1]: p_lesion},
            explanation=explanation,
            segmentation=segmentation,
            outputs={
                "lesion_volume_ml": segmentation.volume_ml(LESION_SEGMENT, image.spacing),
                "lesion_voxels": int(mask.sum()),
            },
            provenance=self._provenance(case),
        )

    def _provenance(self, case: Case) -> dict[str, Any]:
        image = case.image
        assert image is not None
        return {
            "backend": "torch",
            "model_sha256": self.model_sha256,
            "network": "monai.networks.nets.UNet",
            "threshold": self.config.threshold,
            "model_spacing_mm": self.config.spacing,
            "input_study_uid": image.study_uid,
            "input_series_uid": image.series_uid,
            "input_source": image.source,
            "input_shape": list(image.array.shape),
        }

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, data: Path, out_dir: Path) -> dict[str, Any]:
        """Dice and lesion-detection figures on a labelled cohort (folder or manifest.csv)."""
        from medplug_lesion_seg.evaluate import evaluate_plugin  # scikit-learn: only here

        return evaluate_plugin(self, Path(data), Path(out_dir))
