"""The MONAI transform chain stored with a model, and the way back to the input grid.

The network sees every scan in one orientation (RAS), at one voxel size (the
training data's) and one intensity window, padded so the UNet's strides divide
each side. The chain runs on MetaTensors, so every spatial step is recorded and
``to_input_grid`` maps the network's probability map back onto the input
image's own voxels: the mask a plugin returns must sit on the input's grid.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from medplug.contract import ImageVolume
from medplug.errors import InputError, PluginError
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    DivisiblePad,
    EnsureChannelFirst,
    EnsureType,
    Orientation,
    ScaleIntensityRange,
    Spacing,
)

from medplug_lesion_seg.config import LesionSegConfig

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def build_chain(config: LesionSegConfig, *, mask: bool = False) -> Compose:
    """Channel-first, orientation, spacing, intensity window (images), pad to the divisor.

    ``mask=True`` gives the chain for label masks: nearest-neighbour resampling
    and no intensity step, so a mask lands on the voxels its image lands on.
    """
    if config.spacing is None:
        raise PluginError("the model's config has no voxel spacing; it was never fitted")
    steps: list = [
        EnsureChannelFirst(channel_dim="no_channel"),
        Orientation(axcodes=config.orientation, labels=_RAS_LABELS),
        Spacing(pixdim=config.spacing, mode="nearest" if mask else "bilinear", dtype=torch.float32),
    ]
    if not mask:
        low, high = config.intensity_window
        steps.append(ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    steps += [DivisiblePad(k=config.divisor), EnsureType(dtype=torch.float32)]
    return Compose(steps)


def volume_array(volume: ImageVolume, case_id: str) -> np.ndarray:
    """The volume's 3D array, or an ``InputError`` naming the case and the problem."""
    array = np.asarray(volume.array)
    where = f" from {volume.source}" if volume.source else ""
    if array.ndim != 3:
        raise InputError(
            f"lesion-seg segments 3D volumes, got a {array.ndim}D array of shape "
            f"{tuple(array.shape)}{where}",
            case_id=case_id,
        )
    if min(array.shape) < 2:
        raise InputError(
            f"image{where} has a degenerate shape {tuple(array.shape)}; lesion-seg needs at "
            "least 2 voxels along every axis",
            case_id=case_id,
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise InputError(f"image{where} contains NaN or infinite values", case_id=case_id)
    return array


def apply_chain(volume: ImageVolume, chain: Compose, case_id: str) -> MetaTensor:
    """Run ``chain`` on one volume; returns a (1, X, Y, Z) MetaTensor with its history."""
    array = volume_array(volume, case_id)
    # A copy in C order: the chain must never write into the caller's volume.
    pixels = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    # "no channel" up front: every axis is spatial (MONAI would otherwise take a
    # trailing axis for a channel).
    image = MetaTensor(pixels, affine=volume.affine, meta={"original_channel_dim": "no_channel"})
    return chain(image)


def to_input_grid(
    probabilities: torch.Tensor, preprocessed: MetaTensor, chain: Compose, input_shape: tuple
) -> np.ndarray:
    """Map a (1, X, Y, Z) map on the network's grid back onto the input volume's voxels.

    MONAI inverts the recorded steps in reverse: the pad is cropped, the
    resampling is undone onto the input's affine and size, the axes are
    flipped and permuted back.
    """
    mapped = MetaTensor(
        probabilities.detach().float().cpu(),
        meta=dict(preprocessed.meta),
        # MONAI's inverse pops from these records: a deep copy keeps ``preprocessed`` reusable.
        applied_operations=copy.deepcopy(preprocessed.applied_operations),
    )
    inverted = chain.inverse(mapped)
    array = np.asarray(inverted.detach().cpu().numpy()[0], dtype=np.float32)
    if tuple(array.shape) != tuple(input_shape):
        raise PluginError(
            f"the probability map came back with shape {tuple(array.shape)}, not the input's "
            f"{tuple(input_shape)}"
        )
    return array
