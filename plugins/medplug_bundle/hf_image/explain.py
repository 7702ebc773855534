"""Where an HF image classifier looked: attention rollout (ViT-like) or Grad-CAM (CNNs).

Attention rollout (Abnar & Zuidema 2020): average each layer's attention over
heads, add the identity for the residual path, renormalise, multiply through
the layers; the class token's row over the patch tokens is the map. Models
that do not return attentions but have a ``Conv2d`` get Grad-CAM on their last
one. Either map is resized to the processed image size and then, with the
processor's resize, onto the input's rows x columns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_rollout(attentions: tuple[torch.Tensor, ...], patch_grid: tuple[int, int]):
    """(B, gh, gw) maps from per-layer (B, heads, T, T) attentions; T = 1 + gh*gw (+ extras)."""
    rollout = None
    for attention in attentions:
        mean = attention.float().mean(dim=1)
        mean = mean + torch.eye(mean.shape[-1])
        mean = mean / mean.sum(dim=-1, keepdim=True)
        rollout = mean if rollout is None else mean @ rollout
    assert rollout is not None
    grid_h, grid_w = patch_grid
    patches = rollout[:, 0, -grid_h * grid_w :]
    return patches.reshape(-1, grid_h, grid_w)


def last_conv(model: torch.nn.Module) -> torch.nn.Module | None:
    convs = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    return convs[-1] if convs else None


def grad_cam(model: torch.nn.Module, pixels: torch.Tensor, class_index: int) -> torch.Tensor:
    """(B, h, w) Grad-CAM of ``class_index`` on the last Conv2d of ``model``."""
    layer = last_conv(model)
    if layer is None:
        raise ValueError("no Conv2d layer for Grad-CAM")
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["activation"] = output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(pixel_values=pixels.requires_grad_(True)).logits
            logits[:, class_index].sum().backward()
    finally:
        handle.remove()
    activation = store["activation"]
    weights = activation.grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1)).detach()


def to_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, *size), bilinear, each map scaled to [0, 1]."""
    resized = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)
    resized = resized[:, 0]
    low = resized.amin(dim=(1, 2), keepdim=True)
    high = resized.amax(dim=(1, 2), keepdim=True)
    return (resized - low) / torch.clamp(high - low, min=1e-12)


def patch_grid(tokens: int, image_size: tuple[int, int], patch: int) -> tuple[int, int]:
    """The patch grid of a ViT-like model (rows, columns of patches)."""
    rows, cols = image_size[0] // patch, image_size[1] // patch
    if rows * cols > tokens:  # fall back to a square grid of the patch tokens
        side = int(math.isqrt(tokens))
        return side, side
    return rows, cols
