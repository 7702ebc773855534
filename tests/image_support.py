"""Tiny generated 2D data and a small network config shared by the image plugin tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medplug_image.config import ImageModelConfig

SIZE = 16


def tiny_2d_config(**overrides) -> ImageModelConfig:
    """A small MONAI ResNet for 16x16 images; trains in seconds on one thread."""
    settings = dict(
        labels=["clear", "spot"],
        network_kwargs={
            "block": "basic",
            "layers": [1, 1, 1, 1],
            "block_inplanes": [8, 16, 16, 32],
            "conv1_t_size": 3,
            "no_max_pool": True,
        },
        spatial_size=[SIZE, SIZE],
        intensity_window=[0, 255],
        epochs=4,
        batch_size=16,
        learning_rate=3e-3,
        num_threads=1,
        augment={"flip_axes": [0, 1]},
    )
    settings.update(overrides)
    return ImageModelConfig(**settings)


def spot_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; label 1 images carry a bright 4x4 spot somewhere."""
    images = rng.integers(0, 80, size=(n, SIZE, SIZE)).astype(np.uint8)
    labels = np.arange(n) % 2
    for image, label in zip(images, labels, strict=True):
        if label:
            i, j = rng.integers(1, SIZE - 5, size=2)
            image[i : i + 4, j : j + 4] = 220
    return images, labels.reshape(-1, 1)


def write_spots_npz(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A MedMNIST-style .npz of spot images with the given split sizes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = spot_images(n, rng)
    np.savez(path, **arrays)
    return path
