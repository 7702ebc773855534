"""Grad-CAM on one layer, with its hooks removed after each call.

MONAI's ``GradCAM`` registers hooks on the network for good, so building one
per prediction would pile hooks up on a long-running server; this one hooks
the layer for one forward and backward pass only, so concurrent requests and
plain forward passes never see them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def last_conv_name(network: torch.nn.Module) -> str | None:
    """The module name of the last 2D/3D convolution; None for TorchScript or none found."""
    if isinstance(network, torch.jit.ScriptModule):
        return None
    names = [
        name
        for name, module in network.named_modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d)
    ]
    return names[-1] if names else None


def grad_cam(
    forward: Callable[[torch.Tensor], torch.Tensor],
    layer: torch.nn.Module,
    inputs: torch.Tensor,
    class_index: int,
) -> torch.Tensor:
    """(B, *spatial) Grad-CAM of ``class_index``, resized to ``inputs``' spatial size, 0..1."""
    store: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        store["activation"] = output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = forward(inputs.detach().clone().requires_grad_(True))
            logits[:, class_index].sum().backward()
    finally:
        handle.remove()
    activation = store["activation"]
    spatial = tuple(range(2, activation.ndim))
    weights = activation.grad.mean(dim=spatial, keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    mode = "trilinear" if cam.ndim == 5 else "bilinear"
    cam = F.interpolate(cam, size=tuple(inputs.shape[2:]), mode=mode, align_corners=False)[:, 0]
    flat = cam.reshape(len(cam), -1)
    low = flat.min(dim=1).values.reshape(-1, *([1] * (cam.ndim - 1)))
    high = flat.max(dim=1).values.reshape(-1, *([1] * (cam.ndim - 1)))
    return (cam - low) / torch.clamp(high - low, min=1e-12)
