"""The MONAI transform chain stored with a model, applied to a case's ImageVolume.

The chain is rebuilt from the model's config, so inference preprocesses exactly
as training did. Images travel as MetaTensors carrying their affine, so the
spatial steps (orientation, spacing, resize) are recorded and can be inverted:
that is how a Grad-CAM heatmap is put back into the input's own geometry.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import (
    Compose,
    EnsureChannelFirst,
    EnsureType,
    Orientation,
    RepeatChannel,
    Resize,
    ResizeWithPadOrCrop,
    ScaleIntensity,
    ScaleIntensityRange,
    Spacing,
)

from medplug.contract import ImageVolume
from medplug.errors import InputError
from medplug_image.config import ImageModelConfig
from medplug_image.heatmap_geometry import axis_mapping, resample_separable

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def build_preprocess(config: ImageModelConfig) -> Compose:
    """Channel-first, RAS and spacing (3D), intensity window, resize or pad to size."""
    steps: list = [EnsureChannelFirst(channel_dim="no_channel")]
    if config.spatial_dims == 3 and config.orientation:
        steps.append(Orientation(axcodes=config.orientation, labels=_RAS_LABELS))
    if config.spatial_dims == 3 and config.spacing:
        # float32 resampling: the values match float64's here, at half the time
        steps.append(Spacing(pixdim=config.spacing, mode="bilinear", dtype=torch.float32))
    if config.intensity_window:
        low, high = config.intensity_window
        steps.append(ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(ScaleIntensity(minv=0.0, maxv=1.0))
    if config.resize_mode == "pad":
        steps.append(ResizeWithPadOrCrop(spatial_size=config.spatial_size))
    else:
        mode = "bilinear" if config.spatial_dims == 2 else "trilinear"
        steps.append(Resize(spatial_size=config.spatial_size, mode=mode, anti_aliasing=False))
    if config.in_channels > 1:
        steps.append(RepeatChannel(repeats=config.in_channels))
    steps.append(EnsureType(dtype=torch.float32))
    return Compose(steps)


def spatial_array(volume: ImageVolume, config: ImageModelConfig, case_id: str) -> np.ndarray:
    """The volume's array with the model's dimensionality, or a clear InputError."""
    array = np.asarray(volume.array)
    where = f" from {volume.source}" if volume.source else ""
    if array.size == 0:
        raise InputError(f"image{where} is empty (shape {array.shape})", case_id=case_id)
    if array.ndim == 3 and config.spatial_dims == 2 and array.shape[-1] == 1:
        array = array[..., 0]  # a single-slice series is a 2D image
    if array.ndim != config.spatial_dims:
        raise InputError(
            f"model expects a {config.spatial_dims}D image, got a {array.ndim}D array of "
            f"shape {tuple(array.shape)}{where}",
            case_id=case_id,
        )
    if min(array.shape) < 2:
        raise InputError(f"image{where} has a degenerate shape {array.shape}", case_id=case_id)
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise InputError(f"image{where} contains NaN or infinite values", case_id=case_id)
    return array


def preprocess_volume(
    volume: ImageVolume, transform: Compose, config: ImageModelConfig, case_id: str
) -> MetaTensor:
    """Run the stored chain on one volume; returns a (C, *spatial_size) MetaTensor."""
    array = spatial_array(volume, config, case_id)
    # C order: a DICOM stack arrives as a transposed view (x, y, z) of its (z, y, x)
    # slices, and MONAI's resampling makes it contiguous after flipping it, which is
    # slower than this one copy (256x256x64 CT: 66-83 ms -> 47-52 ms, same values).
    # Always a copy: the chain must never write into the caller's volume.
    pixels = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    # Saying "no channel" up front makes MONAI count every axis as spatial: without it
    # MONAI 1.6 takes the last axis of a 3D array for a channel and leaves pads on that
    # axis out of the affine, which ``invert_to_input`` reads.
    image = MetaTensor(pixels, affine=volume.affine, meta={"original_channel_dim": "no_channel"})
    return transform(image)


def invert_to_input(
    heatmap: torch.Tensor,
    preprocessed: MetaTensor,
    transform: Compose,
    input_shape: tuple,
    input_affine: np.ndarray | None = None,
) -> np.ndarray:
    """Map a (1, *spatial_size) map back through the spatial steps onto the input grid.

    Given the input's affine, a 3D axis-aligned series takes one separable linear
    interpolation (``heatmap_geometry``); otherwise MONAI inverts the chain. 2D
    maps always do: MONAI does not record a 2D crop in the affine, and they are small.
    """
    spatial_dims = heatmap.ndim - 1
    spatial_shape = tuple(int(n) for n in input_shape[:spatial_dims])
    if input_affine is not None and spatial_dims == 3 and len(input_shape) == 3:
        grid_affine = to_affine_nd(spatial_dims, np.asarray(preprocessed.affine, dtype=float))
        maps = axis_mapping(to_affine_nd(spatial_dims, np.asarray(input_affine, dtype=float)),
                            grid_affine, spatial_shape)  # fmt: skip
        if maps is not None:
            return resample_separable(heatmap[0], maps, spatial_shape).reshape(input_shape)
    mapped = MetaTensor(
        heatmap.detach().float().cpu(),
        meta=dict(preprocessed.meta),
        # MONAI's inverse pops from these records: a deep copy keeps ``preprocessed`` reusable
        applied_operations=copy.deepcopy(preprocessed.applied_operations),
    )
    inverted = transform.inverse(mapped)
    array = np.asarray(inverted.detach().cpu().numpy()[0], dtype=np.float32)
    return array.reshape(input_shape) if array.size == int(np.prod(input_shape)) else array
