"""Build any ``monai.networks.nets`` classifier by name, and find its hooks.

MONAI networks disagree on argument names (``n_input_channels`` vs
``in_channels``, ``num_classes`` vs ``out_channels``); ``build_network`` maps
the config onto whichever the class takes, so a config only names the class
and its own extra keyword arguments.
"""

from __future__ import annotations

import inspect

import monai.networks.nets as monai_nets
import torch
from torch import nn

from medplug.errors import DataError
from medplug_image.config import ImageModelConfig
from medplug_image.ensemble import SeedEnsemble, members_of

_IN_CHANNEL_ARGS = ("in_channels", "n_input_channels")
_CLASS_ARGS = ("num_classes", "out_channels", "classes")
_GRADCAM_LAYERS = {"ResNet": "layer4", "DenseNet": "class_layers.relu"}


def build_network(config: ImageModelConfig) -> nn.Module:
    """The model for ``config``: one network, or a ``SeedEnsemble`` of ``config.ensemble``."""
    if config.ensemble > 1:
        return SeedEnsemble([build_member(config) for _ in range(config.ensemble)])
    return build_member(config)


def build_member(config: ImageModelConfig) -> nn.Module:
    """Instantiate ``config.network`` from ``monai.networks.nets`` for this task."""
    network_class = getattr(monai_nets, config.network, None)
    if not (isinstance(network_class, type) and issubclass(network_class, nn.Module)):
        raise DataError(f"{config.network!r} is not a network class in monai.networks.nets")
    parameters = inspect.signature(network_class.__init__).parameters
    kwargs = dict(config.network_kwargs)
    if "spatial_dims" in parameters:
        kwargs["spatial_dims"] = config.spatial_dims
    for name in _IN_CHANNEL_ARGS:
        if name in parameters:
            kwargs[name] = config.in_channels
            break
    for name in _CLASS_ARGS:
        if name in parameters:
            kwargs[name] = config.num_classes
            break
    try:
        return network_class(**kwargs)
    except TypeError as exc:
        raise DataError(f"cannot build {config.network} with {kwargs}: {exc}") from exc


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer; its input is the penultimate-layer embedding."""
    linear = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise DataError(f"{type(model).__name__} has no linear classifier layer to embed from")
    return linear[-1]


def gradcam_layer_name(model: nn.Module, config: ImageModelConfig) -> str:
    """The layer Grad-CAM reads: the config's choice, a known one, or the last conv."""
    if config.gradcam_layer:
        return config.gradcam_layer
    for class_name, layer in _GRADCAM_LAYERS.items():
        if type(model).__name__.startswith(class_name):
            return layer
    conv_types = (nn.Conv2d, nn.Conv3d)
    names = [name for name, module in model.named_modules() if isinstance(module, conv_types)]
    if not names:
        raise DataError(f"{type(model).__name__} has no convolution layer for Grad-CAM")
    return names[-1]


class EmbeddingHook:
    """Captures the classifier's input (the embedding) during a forward pass.

    For a ``SeedEnsemble`` the members' embeddings are concatenated, member
    order, as the fusion plugin does: members learn unrelated feature bases,
    so averaging them would mix unrelated features.
    """

    def __init__(self, model: nn.Module) -> None:
        self._parts: list[torch.Tensor] = []
        self._handles = [
            classifier_layer(member).register_forward_hook(self._store)
            for member in members_of(model)
        ]

    def _store(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output) -> None:
        self._parts.append(inputs[0].detach())

    @property
    def value(self) -> torch.Tensor | None:
        """Embeddings of the first forward pass after the hook was set."""
        if not self._parts:
            return None
        return torch.cat(self._parts[: len(self._handles)], dim=1)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class LogitsAndEmbedding(nn.Module):
    """The network with its embedding (the classifier's input) as a second output.

    One forward pass for both: the plugin's torch path and the ONNX export use it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hook = EmbeddingHook(self.model)
        try:
            logits = self.model(images)
            embedding = hook.value
        finally:
            hook.remove()
        assert embedding is not None
        return logits, embedding
