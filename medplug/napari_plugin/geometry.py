"""Map an ``ImageVolume``'s (i, j, k) array and RAS affine onto a napari layer and back.

napari shows the last two array axes and slides over the first, with world y
pointing down the screen. So layers hold the array with its axes reversed,
(k, j, i): slices of a DICOM series appear as a radiologist reads them, and
world coordinates are DICOM patient (LPS) millimetres in (z, y, x) order. The
layer's ``scale`` is the voxel spacing and its ``affine`` carries the direction
cosines and origin, so any two layers from medplug (the image and its Grad-CAM)
line up in the viewer whatever their grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class LayerGeometry:
    data: np.ndarray
    scale: np.ndarray
    affine: np.ndarray  # (n+1, n+1): rotation and translation, scale kept apart


def to_layer(array: np.ndarray, affine: np.ndarray) -> LayerGeometry:
    """Layer data, scale and affine for an (i, j[, k]) array with a RAS voxel-to-world affine."""
    n = array.ndim
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=float)
    linear = lps[:n, :n][::-1, ::-1]
    translation = lps[:n, 3][::-1]
    scale = np.linalg.norm(linear, axis=0)
    scale[scale == 0] = 1.0
    matrix = np.eye(n + 1)
    matrix[:n, :n] = linear / scale
    matrix[:n, n] = translation
    return LayerGeometry(np.transpose(array, tuple(range(n))[::-1]), scale, matrix)


def from_layer(data: np.ndarray, data_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (i, j[, k]) array and 4x4 RAS affine of a layer (inverse of ``to_layer``)."""
    n = data.ndim
    matrix = np.asarray(data_to_world, dtype=float)
    lps = np.eye(4)
    lps[:n, :n] = matrix[:n, :n][::-1, ::-1]
    lps[:n, 3] = matrix[:n, n][::-1]
    return np.transpose(data, tuple(range(n))[::-1]), RAS_TO_LPS @ lps
