"""Where an HF image classifier looked: attention rollout (ViT-like) or Grad-CAM (CNNs).

Attention rollout (Abnar & Zuidema 2020): average each layer's attention over
heads, add the identity for the residual path, renormalise, multiply through
the layers; the class token's row over the patch tokens is the map. Models
that do not return attentions but have a ``Conv2d`` get Grad-CAM on their last
one (``medplug_bundle.gradcam``). Either map is resized to the processed image
size and then, with the processor's resize, onto the input's rows x columns.
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
