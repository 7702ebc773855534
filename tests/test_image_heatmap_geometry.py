"""The separable heatmap inversion agrees with MONAI's inverse of the stored chain.

Real MONAI transforms on real geometry: an LPS axial series, a sagittal one
(permuted axes), a crop to a small network grid, the resize chain, and an
oblique series that must fall back to MONAI.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medplug.contract import ImageVolume
from medplug_image.config import ImageModelConfig
from medplug_image.heatmap_geometry import axis_mapping
from medplug_image.preprocessing import build_preprocess, invert_to_input, preprocess_volume

AXIAL_LPS = np.diag([-0.75, -0.75, 2.5, 1.0])
SAGITTAL = np.array(  # columns: A->P in-plane rows, I->S, R->L through-plane
    [[0.0, 0.0, -2.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 0.8, 0.0, -3.0], [0, 0, 0, 1.0]]
)


def config(**overrides) -> ImageModelConfig:
    settings = {
        "labels": ["no_lesion", "lesion"],
        "spatial_dims": 3,
        "network": "ResNet",
        "spatial_size": [32, 32, 32],
        "orientation": "RAS",
        "spacing": [1.5, 1.5, 2.5],
        "resize_mode": "pad",
        "intensity_window": [-1000, 200],
    }
    return ImageModelConfig.from_dict({**settings, **overrides})


def blob(shape: tuple[int, ...], sigma: float = 4.0) -> torch.Tensor:
    """A smooth (1, *shape) map peaking off-centre and near 0 at the borders, like Grad-CAM."""
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    centre = [0.4 * n for n in shape]
    squared = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return torch.exp(-squared / (2 * sigma**2))[None]


def both_ways(cfg: ImageModelConfig, shape: tuple[int, ...], affine: np.ndarray):
    transform = build_preprocess(cfg)
    volume = ImageVolume(array=np.zeros(shape, np.float32), affine=affine, modality="CT")
    preprocessed = preprocess_volume(volume, transform, cfg, "case")
    heatmap = blob(tuple(preprocessed.shape[1:]))
    monai = invert_to_input(heatmap, preprocessed, transform, shape)
    fast = invert_to_input(heatmap, preprocessed, transform, shape, affine)
    return monai, fast, preprocessed


@pytest.mark.parametrize(
    ("name", "overrides", "shape", "affine", "atol"),
    [
        ("axial LPS, pad", {}, (64, 64, 32), AXIAL_LPS, 1e-5),
        # MONAI ramps a cropped edge down to 0 over one voxel; we stop at half a voxel
        ("axial, cropped to the grid", {}, (96, 96, 40), AXIAL_LPS, 0.01),
        ("sagittal, pad on every axis", {}, (60, 50, 30), SAGITTAL, 0.02),
        ("axial, resize", {"resize_mode": "resize"}, (64, 64, 32), AXIAL_LPS, 0.03),
    ],
)
def test_separable_inverse_matches_monai(name, overrides, shape, affine, atol):
    monai, fast, _ = both_ways(config(**overrides), shape, affine)
    assert fast.shape == monai.shape == shape
    assert fast.dtype == np.float32
    # One linear interpolation either way for pad/crop chains (equal); resize chains
    # interpolate twice in MONAI's inverse, once here (close).
    np.testing.assert_allclose(fast, monai, atol=atol, err_msg=name)
    assert np.unravel_index(fast.argmax(), shape) == np.unravel_index(monai.argmax(), shape)


def test_pad_on_the_last_axis_reaches_the_affine():
    """MONAI 1.6 leaves a pad on a 3D array's last axis out of the affine unless told
    the array has no channel; the separable inverse depends on that affine."""
    _, _, preprocessed = both_ways(config(), (60, 50, 30), SAGITTAL)
    maps = axis_mapping(SAGITTAL, np.asarray(preprocessed.affine, dtype=float), (60, 50, 30))
    assert maps is not None
    # The sagittal slices (2 mm, 30 of them: 60 mm) are centred in a 32-voxel 2.5 mm grid (80 mm).
    through_plane = maps[2]
    first, last = through_plane.offset, through_plane.scale * 29 + through_plane.offset
    assert math.isclose((first + last) / 2, 15.5, abs_tol=0.5)


def rotation_about_z(degrees: float, spacing: tuple[float, float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    affine = np.eye(4)
    affine[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    affine[:3, :3] = affine[:3, :3] @ np.diag(spacing)
    return affine


def test_oblique_series_keeps_its_rotation_on_the_network_grid():
    """Spacing keeps an oblique series' direction, so its grids stay aligned to each other."""
    oblique = rotation_about_z(12, (0.75, 0.75, 2.5))
    monai, fast, preprocessed = both_ways(config(), (48, 48, 24), oblique)
    assert axis_mapping(oblique, np.asarray(preprocessed.affine, dtype=float), (48, 48, 24))
    np.testing.assert_allclose(fast, monai, atol=0.01)


def test_grids_rotated_against_each_other_are_not_separable():
    grid = rotation_about_z(0, (1.5, 1.5, 2.5))
    assert axis_mapping(rotation_about_z(0.5, (0.75, 0.75, 2.5)), grid, (256, 256, 24)) is None
    # a rotation too small to move any voxel by 1/100 of a network voxel is ignored
    assert axis_mapping(rotation_about_z(1e-4, (0.75, 0.75, 2.5)), grid, (256, 256, 24))


def test_inverting_twice_gives_the_same_map():
    """MONAI's inverse pops from the records it reads; ours copies them first."""
    cfg = config(resize_mode="resize")
    transform = build_preprocess(cfg)
    volume = ImageVolume(array=np.zeros((40, 40, 20), np.float32), affine=AXIAL_LPS)
    preprocessed = preprocess_volume(volume, transform, cfg, "case")
    heatmap = blob(tuple(preprocessed.shape[1:]))
    first = invert_to_input(heatmap, preprocessed, transform, (40, 40, 20))
    second = invert_to_input(heatmap, preprocessed, transform, (40, 40, 20))
    np.testing.assert_array_equal(first, second)
