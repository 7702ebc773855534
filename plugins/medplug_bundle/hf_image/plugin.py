"""``hf-image``: any local Hugging Face image-classification checkpoint as a 2D plugin.

``medplug predict --plugin hf-image --model FOLDER`` where ``FOLDER`` is what
``model.save_pretrained`` and ``processor.save_pretrained`` wrote (config.json,
model.safetensors, preprocessor_config.json). The checkpoint's own image
processor prepares the pixels; medplug only turns its image into what such
processors expect: rows x columns (``ImageVolume`` indexes (column, row)),
values 0-255 (arrays outside that range are min-max scaled), and the model's
number of channels. Explanation: attention rollout where the model returns
attentions (ViT, DeiT, BEiT, ...), else Grad-CAM on its last ``Conv2d``.
Identity: the SHA-256 of the folder's file manifest (``medplug_bundle.identity``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from medplug.contract import Case, Explanation, InputSpec, Plugin, PluginInfo, Prediction
from medplug.errors import InputError
from medplug.registry import DECLARATION_NAME, read_declaration
from medplug_bundle.gradcam import grad_cam, last_conv_name
from medplug_bundle.hf_image import PLUGIN_NAME
from medplug_bundle.hf_image.checkpoint import check_folder, load_checkpoint
from medplug_bundle.hf_image.explain import attention_rollout, patch_grid, to_size
from medplug_bundle.identity import folder_identity


class HfImagePlugin(Plugin):
    """A transformers ``AutoModelForImageClassification`` checkpoint behind the contract."""

    name: ClassVar[str] = PLUGIN_NAME

    def __init__(self, folder: Path, model: Any, processor: Any, explain: bool = True) -> None:
        self.folder = folder
        self.model = model
        self.processor = processor
        self.explain = explain
        config = model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.channels = int(getattr(config, "num_channels", 3))
        self.model_identity, self.manifest = folder_identity(folder)
        info = self.describe()
        info.version = str(getattr(config, "transformers_version", None) or info.version)
        info.labels = list(self.labels)
        info.inputs["image"] = InputSpec(
            kind="image",
            spatial_dims=2,
            num_channels=self.channels,
            description=f"2D image for {config.model_type} (its image processor prepares it)",
        )
        info.description = f"Hugging Face {config.model_type} checkpoint {folder.name}"
        self.info = info

    @classmethod
    def describe(cls) -> PluginInfo:
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> HfImagePlugin:
        folder = Path(model_dir)
        check_folder(folder)
        model, processor = load_checkpoint(folder)
        return cls(folder, model, processor)

    def pixels(self, case: Case) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The processor's ``pixel_values`` for the case, and the input array's shape."""
        image = case.image
        assert image is not None
        array = np.asarray(image.array, dtype=np.float32)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2 or min(array.shape) < 2:
            raise InputError(
                f"hf-image needs a 2D image, got {image.array.shape}", case_id=case.case_id
            )
        rows = array.T  # ImageVolume is (column, row); image processors want (row, column)
        low, high = float(rows.min()), float(rows.max())
        if low < 0 or high > 255:
            rows = (rows - low) / max(high - low, 1e-6) * 255.0
        grey = np.clip(np.rint(rows), 0, 255).astype(np.uint8)
        stacked = np.repeat(grey[..., None], self.channels, axis=-1)
        processed = self.processor(
            images=[stacked], return_tensors="pt", input_data_format="channels_last"
        )
        return processed["pixel_values"], tuple(image.array.shape)

    def _predict(self, case: Case) -> Prediction:
        pixels, shape = self.pixels(case)
        with torch.no_grad():
            output = self.model(pixel_values=pixels, output_attentions=self.explain)
        logits = output.logits.float()
        if getattr(self.model.config, "problem_type", None) == "multi_label_classification":
            probs = torch.sigmoid(logits)[0]
        else:
            probs = torch.softmax(logits, dim=-1)[0]
        index = int(probs.argmax())
        explanation = None
        method = None
        if self.explain:
            heat, method = self._heatmap(pixels, output, index)
            if heat is not None:
                rows, cols = shape[1], shape[0]
                mapped = to_size(heat, (rows, cols))[0].numpy().T.reshape(shape)
                explanation = Explanation(
                    heatmap=mapped.astype(np.float32), heatmap_affine=case.image.affine
                )
        return Prediction(
            plugin=self.name,
            plugin_version=self.info.version,
            case_id=case.case_id,
            label=self.labels[index],
            probabilities={n: float(p) for n, p in zip(self.labels, probs.tolist(), strict=True)},
            explanation=explanation,
            provenance={
                "model_identity": self.model_identity,
                "model_type": self.model.config.model_type,
                "explanation": method,
                "input_source": case.image.source,
            },
        )

    def _heatmap(
        self, pixels: torch.Tensor, output: Any, index: int
    ) -> tuple[torch.Tensor | None, str | None]:
        attentions = getattr(output, "attentions", None)
        patch = getattr(self.model.config, "patch_size", None)
        if attentions and isinstance(patch, int):
            tokens = attentions[0].shape[-1] - 1
            grid = patch_grid(tokens, tuple(pixels.shape[-2:]), patch)
            return attention_rollout(attentions, grid), "attention rollout"
        target = last_conv_name(self.model)
        if target is None:
            return None, None
        layer = self.model.get_submodule(target)
        heat = grad_cam(lambda x: self.model(pixel_values=x).logits, layer, pixels, index)
        return heat, f"grad-cam on {target}"
