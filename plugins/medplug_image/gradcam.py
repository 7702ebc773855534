"""Grad-CAM heatmaps (MONAI ``GradCAM``), batched, normalised to [0, 1] per image.

MONAI's ``GradCAM`` leaves hooks on the network it wraps, so it gets its own
copy of the model; the prediction network stays hook-free and fast. A seed
ensemble is explained by the mean of its members' maps: MONAI's ``GradCAM``
reads one layer, and each member has its own.

Grad-CAM needs the gradient of the class score with respect to the target
layer's output only. The copy's target layer therefore hands on its output
cut from the graph before it (same values, a fresh leaf that requires grad),
so the backward pass runs through the layers after it and stops there, never
through the early full-resolution convolutions down to the input.
"""

from __future__ import annotations

import copy
import warnings

import torch
from monai.visualize import GradCAM
from torch import nn

from medplug_image.config import ImageModelConfig
from medplug_image.ensemble import members_of
from medplug_image.networks import gradcam_layer_name


class HeatmapExplainer:
    """Grad-CAM on one layer of a private copy of ``model``."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        # Registered before GradCAM's own hooks, so they see the cut output.
        self.model.get_submodule(layer).register_forward_hook(_start_graph_here)
        self.cam = GradCAM(nn_module=self.model, target_layers=layer, postprocessing=_identity)

    def __call__(self, images: torch.Tensor, class_idx: int) -> torch.Tensor:
        """(B, 1, *spatial) maps for ``class_idx``, upsampled to the images' size."""
        with torch.enable_grad(), warnings.catch_warnings():
            # torch notes that the hook sees output gradients only: that is the point.
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            maps = self.cam(images.detach(), class_idx=class_idx).detach()
        return _normalise(maps)


class EnsembleExplainer:
    """Grad-CAM of every member (one network is a one-member ensemble), averaged."""

    def __init__(self, model: nn.Module, config: ImageModelConfig) -> None:
        self.explainers = [
            HeatmapExplainer(member, gradcam_layer_name(member, config))
            for member in members_of(model)
        ]

    def __call__(self, images: torch.Tensor, class_idx: int) -> torch.Tensor:
        if len(self.explainers) == 1:
            return self.explainers[0](images, class_idx)
        maps = torch.stack([explain(images, class_idx) for explain in self.explainers]).mean(0)
        return _normalise(maps)


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak.view(-1, *[1] * (maps.ndim - 1))


def _start_graph_here(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    """The layer's output as a leaf of the autograd graph: backward ends at this layer."""
    return output.detach().requires_grad_(True)


def _identity(maps: torch.Tensor) -> torch.Tensor:
    return maps
