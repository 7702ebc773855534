"""Put a map on the network's grid back onto the input's voxel grid, one axis at a time.

MONAI's inverse of the stored chain (``Compose.inverse``) resamples with
``affine_grid``/``grid_sample`` over the whole input grid: about 0.2 s for one
256x256x64 CT, more than the network itself. For an axis-aligned series the
spatial steps (Orientation, Spacing, pad/crop, Resize) only permute, flip,
scale and shift the axes, so each input axis reads one network axis and the
linear interpolation separates into one 1D interpolation per axis: the same
values at a few percent of the cost. Oblique series (a tilted gantry, say)
are not separable; ``axis_mapping`` says so and the caller keeps MONAI's inverse.

Outside the network grid: within half a voxel of its edge the edge value is
kept (MONAI's ``border`` padding of ``Spacing``); further out the map is 0,
since the network never saw that region (MONAI pads a cropped region with 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Largest drift, in network voxels, that an ignored off-axis term may cause over the
# input's extent; above it the grids count as oblique.
_MAX_DRIFT_VOXELS = 0.01


@dataclass(frozen=True)
class AxisMap:
    """Network coordinate along ``grid_axis`` of input index i: ``scale * i + offset``."""

    grid_axis: int
    scale: float
    offset: float


def axis_mapping(
    input_affine: np.ndarray, grid_affine: np.ndarray, input_shape: tuple[int, ...]
) -> list[AxisMap] | None:
    """One AxisMap per input axis, or None when the two grids are not axis-aligned.

    Both affines are voxel-to-world, (d+1)x(d+1) for d spatial axes.
    """
    ndim = len(input_shape)
    voxel_to_grid = np.linalg.inv(grid_affine) @ input_affine
    linear, shift = voxel_to_grid[:ndim, :ndim], voxel_to_grid[:ndim, ndim]
    grid_axis_of = np.argmax(np.abs(linear), axis=0)  # for each input axis
    if sorted(grid_axis_of.tolist()) != list(range(ndim)):
        return None  # two input axes read the same network axis: not a permutation
    maps = []
    for input_axis, grid_axis in enumerate(grid_axis_of):
        off_axis = np.abs(np.delete(linear[grid_axis], input_axis))
        extents = np.delete(np.asarray(input_shape, dtype=float), input_axis)
        if np.any(off_axis * extents > _MAX_DRIFT_VOXELS):
            return None
        maps.append(AxisMap(int(grid_axis), float(linear[grid_axis, input_axis]),
                            float(shift[grid_axis])))  # fmt: skip
    return maps


def _interpolate_axis(values: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``values`` along ``axis`` at ``coords``, edge value beyond."""
    size = values.shape[axis]
    clamped = coords.clamp(0, size - 1)
    lower = clamped.floor().long().clamp(max=size - 1)
    upper = (lower + 1).clamp(max=size - 1)
    weight = (clamped - lower).to(values.dtype)
    shape = [1] * values.ndim
    shape[axis] = -1
    low, high = values.index_select(axis, lower), values.index_select(axis, upper)
    return torch.lerp(low, high, weight.view(shape))


def resample_separable(
    grid_map: torch.Tensor, maps: list[AxisMap], input_shape: tuple[int, ...]
) -> np.ndarray:
    """``grid_map`` (the network's spatial shape) sampled at every input voxel.

    Only the box of input voxels that fall on the network grid is interpolated;
    the rest stays 0 (a large CT often extends far beyond a small network grid).
    """
    values = grid_map.detach().float().cpu()
    out = np.zeros(input_shape, dtype=np.float32)
    box: list[slice] = [slice(0)] * len(maps)
    # Innermost network axis first, while the array is small: gathering along the
    # innermost axis is the slow one (about 15x a gather along the outermost).
    for input_axis in sorted(range(len(maps)), key=lambda b: -maps[b].grid_axis):
        axis_map = maps[input_axis]
        size = values.shape[axis_map.grid_axis]
        coords = axis_map.scale * torch.arange(input_shape[input_axis], dtype=torch.float64)
        coords += axis_map.offset
        seen = torch.nonzero((coords >= -0.5) & (coords <= size - 0.5)).flatten()
        if len(seen) == 0:
            return out  # the network grid misses the input entirely
        first, last = int(seen[0]), int(seen[-1]) + 1  # contiguous: coords are linear
        box[input_axis] = slice(first, last)
        values = _interpolate_axis(values, axis_map.grid_axis, coords[first:last])
    # values' axis k now runs along the input axis whose map reads network axis k
    order = [axis_map.grid_axis for axis_map in maps]
    out[tuple(box)] = values.permute(order).numpy()
    return out
