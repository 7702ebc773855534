"""Grad-CAM heatmaps as DICOM Secondary Capture images, so any PACS viewer shows them.

A 3D heatmap is shown on the slice where it is strongest, blended over the
source image in RGB; the image lands in the source study as its own series.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from pydicom.dataset import Dataset

from medplug.dicom_out.sr import MANUFACTURER

SC_SERIES_NUMBER = 9902


def peak_slice(image: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axial slice (last axis) where the heatmap peaks; 2D inputs pass through.

    Copies, so the (possibly huge) volumes can be freed once the slice is taken.
    """
    image = np.squeeze(np.asarray(image, dtype=np.float32))
    heatmap = np.squeeze(np.asarray(heatmap, dtype=np.float32))
    if heatmap.shape != image.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from image shape {image.shape}")
    if heatmap.ndim == 3:
        peak = int(np.argmax(heatmap.reshape(-1, heatmap.shape[-1]).sum(axis=0)))
        return image[..., peak].copy(), heatmap[..., peak].copy()
    if heatmap.ndim != 2:
        raise ValueError(f"cannot render a {heatmap.ndim}D heatmap")
    return image, heatmap


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """An 8-bit RGB picture: grey image with the heatmap (jet) blended on top.

    Arrays are (i, j) = (column, row) as in the contract; DICOM pixels are
    (row, column), hence the transpose.
    """
    image2d, heat2d = peak_slice(image, heatmap)
    grey = _normalise(image2d)[..., None].repeat(3, axis=-1)
    heat = colormaps["jet"](_normalise(heat2d))[..., :3]
    blended = (1 - alpha) * grey + alpha * heat
    return np.ascontiguousarray((blended * 255).round().astype(np.uint8).transpose(1, 0, 2))


def build_heatmap_sc(
    image: np.ndarray,
    heatmap: np.ndarray,
    reference: Dataset,
    series_uid: str,
    sop_uid: str,
) -> hd.sc.SCImage:
    """A Secondary Capture in ``reference``'s study showing the heatmap over the image."""
    pixels = overlay_rgb(image, heatmap)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        series_description="medplug Grad-CAM",
    )
    # General Series Laterality is type 2C; present (empty if unknown) keeps validators content.
    sc.Laterality = reference.get("Laterality", "")
    return sc
