"""Batched random augmentation for training, built on MONAI's ``AffineTransform`` layer.

MONAI's per-image ``RandAffine`` costs ~10 ms an image on a busy 2-core CPU
(more than the network step); drawing one random matrix per image and warping
the whole batch with MONAI's batched ``AffineTransform`` costs about a
millisecond per batch. Flips, gamma contrast and noise are batched the same way.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers import AffineTransform

from medplug_image.config import AugmentConfig


class BatchAugment:
    """Random flip, rotation, scaling, translation, gamma and noise for a (B, C, *S) batch."""

    def __init__(self, config: AugmentConfig, spatial_dims: int, seed: int) -> None:
        self.config = config
        self.spatial_dims = spatial_dims
        self.generator = torch.Generator().manual_seed(seed)
        self.warp = AffineTransform(normalized=True, padding_mode="border", align_corners=False)

    def _uniform(self, shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=self.generator) * 2 - 1) * bound

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        images = images.clone()
        batch = images.shape[0]
        for axis in cfg.flip_axes:
            flip = torch.rand(batch, generator=self.generator) < 0.5
            images[flip] = torch.flip(images[flip], dims=[1 + axis])
        if cfg.rotate_deg or cfg.scale or cfg.translate:
            theta = self._random_affines(batch)
            apply = torch.rand(batch, generator=self.generator) < cfg.prob
            if apply.any():
                images[apply] = self.warp(images[apply], theta[apply])
        if cfg.contrast_gamma:
            gamma = 1 + self._uniform((batch,), cfg.contrast_gamma)
            gamma = gamma.view(batch, *[1] * (images.ndim - 1))
            low = images.amin(dim=tuple(range(1, images.ndim)), keepdim=True)
            span = images.amax(dim=tuple(range(1, images.ndim)), keepdim=True) - low + 1e-6
            images = ((images - low) / span).pow(gamma) * span + low
        if cfg.noise_std:
            noise = torch.randn(images.shape, generator=self.generator) * cfg.noise_std
            images = images + noise
        return images

    def _random_affines(self, batch: int) -> torch.Tensor:
        """(B, d, d+1) matrices on normalised coordinates: rotate, scale, translate."""
        dims = self.spatial_dims
        cfg = self.config
        scale = 1 + self._uniform((batch, dims), cfg.scale)
        matrix = torch.diag_embed(1 / scale)
        angles = self._uniform((batch, 1 if dims == 2 else 3), math.radians(cfg.rotate_deg))
        for plane, (a, b) in enumerate([(0, 1)] if dims == 2 else [(0, 1), (0, 2), (1, 2)]):
            rotation = torch.eye(dims).repeat(batch, 1, 1)
            cos, sin = torch.cos(angles[:, plane]), torch.sin(angles[:, plane])
            rotation[:, a, a], rotation[:, a, b] = cos, -sin
            rotation[:, b, a], rotation[:, b, b] = sin, cos
            matrix = rotation @ matrix
        shift = self._uniform((batch, dims, 1), 2 * cfg.translate)
        return torch.cat([matrix, shift], dim=2)
