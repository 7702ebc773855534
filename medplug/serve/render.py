"""Draw the heatmap over one slice of the image as a PNG for viewers and the web page.

Slices are shown the way a radiologist reads them: rows down the array's second
axis, columns along its first (DICOM row/column order), slice index along the
third. A heatmap on another grid (``heatmap_affine``) is resampled onto the image
grid first (``medplug.dicom_out.grid``, as for the Parametric Map), so the overlay
lines up whatever the plugin's preprocessing.
"""

from __future__ import annotations

import io

import numpy as np

from medplug.contract import ImageVolume
from medplug.dicom_out.grid import on_image_grid as heatmap_on_image_grid  # noqa: F401
from medplug.errors import InputError


def hottest_slice(heat: np.ndarray) -> int:
    """Index along the slice axis where the heatmap is strongest."""
    if heat.ndim < 3:
        return 0
    return int(np.argmax(heat.reshape(-1, heat.shape[2]).sum(axis=0)))


def overlay_png(
    image: ImageVolume,
    heat: np.ndarray,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.45,
) -> tuple[bytes, int]:
    """PNG bytes of one slice with the heatmap blended over it, and the slice index used."""
    from matplotlib import colormaps
    from PIL import Image

    array = np.asarray(image.array, dtype=np.float32)
    n_slices = array.shape[2] if array.ndim >= 3 else 1
    if slice_index is None:
        slice_index = hottest_slice(heat)
    if not 0 <= slice_index < n_slices:
        raise InputError(f"slice {slice_index} is outside 0..{n_slices - 1}")
    pixels = array[:, :, slice_index] if array.ndim >= 3 else array
    heat_slice = heat[:, :, slice_index] if heat.ndim >= 3 else heat
    low, high = window or tuple(np.percentile(pixels, [1, 99]))
    gray = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1)
    peak = float(heat.max()) if heat.size else 0.0
    weight = np.clip(heat_slice / peak, 0, 1) if peak > 0 else np.zeros_like(heat_slice)
    colour = colormaps["inferno"](weight)[..., :3]
    blend = (alpha * weight)[..., None]
    rgb = (1 - blend) * gray[..., None] + blend * colour
    buffer = io.BytesIO()
    # Transpose: array axis 0 runs along columns and axis 1 along rows, as in DICOM.
    Image.fromarray((rgb.transpose(1, 0, 2) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue(), slice_index
