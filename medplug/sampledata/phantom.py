"""A chest-like CT phantom in Hounsfield units, with an optional spherical lesion.

Shapes are defined on normalised coordinates so any grid size gives the same
anatomy: a soft-tissue body ellipse, a bone ring (ribs) and spine, and two
lungs that taper towards the apex and base. Patient right is low column index
(radiological convention), superior is high slice index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medplug.sampledata.geometry import SeriesGeometry

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 700.0
HU_MIN, HU_MAX = -1024, 3071  # what 12-bit stored values with intercept -1024 can hold

# Lung centres (u, v) and semi-axes in normalised coordinates, u = left-right, v = ant-post.
LUNG_CENTRES = {"right": (-0.38, -0.05), "left": (0.38, -0.05)}
LUNG_SEMI_AXES = (0.26, 0.42)
# Slice fractions (0 = inferior, 1 = superior) spanned by each lobe.
LOBES = {
    "right upper lobe": ("right", 0.62, 0.85),
    "right middle lobe": ("right", 0.40, 0.62),
    "right lower lobe": ("right", 0.15, 0.40),
    "left upper lobe": ("left", 0.50, 0.85),
    "left lower lobe": ("left", 0.15, 0.50),
}


@dataclass(frozen=True)
class Lesion:
    """A spherical lesion: centre in voxel indices, diameter in mm, its lobe's name."""

    centre_ijk: tuple[float, float, float]
    diameter_mm: float
    lobe: str


def _normalised_grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nx, ny, nz = shape
    u = (np.arange(nx) - (nx - 1) / 2) / (nx / 2)
    v = (np.arange(ny) - (ny - 1) / 2) / (ny / 2)
    w = np.arange(nz) / (nz - 1)
    return np.meshgrid(u, v, w, indexing="ij")


def _lung_taper(w: np.ndarray | float) -> np.ndarray | float:
    """Lungs shrink towards apex and base: 1 in the middle, 0.8 at 15% / 85% of the stack."""
    return np.sqrt(np.clip(1 - ((w - 0.5) / 0.6) ** 2, 0, None))


def lung_masks(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Boolean mask of each lung on the grid."""
    u, v, w = _normalised_grid(shape)
    taper = _lung_taper(w)
    a, b = LUNG_SEMI_AXES
    return {
        side: ((u - cu) / (a * taper + 1e-9)) ** 2 + ((v - cv) / (b * taper + 1e-9)) ** 2 <= 1
        for side, (cu, cv) in LUNG_CENTRES.items()
    }


def anatomy_hu(shape: tuple[int, int, int]) -> np.ndarray:
    """Noise-free phantom (float32 HU), without lesion."""
    u, v, w = _normalised_grid(shape)
    body_radius = np.sqrt((u / 0.88) ** 2 + (v / 0.68) ** 2)
    volume = np.full(shape, AIR_HU, dtype=np.float32)
    volume[body_radius <= 1.0] = SOFT_TISSUE_HU
    volume[(body_radius >= 0.86) & (body_radius <= 0.93)] = BONE_HU
    spine = (u / 0.11) ** 2 + ((v - 0.5) / 0.11) ** 2 <= 1
    volume[spine] = BONE_HU
    for mask in lung_masks(shape).values():
        volume[mask] = LUNG_HU
    return volume


def draw_lesion(
    rng: np.random.Generator, geometry: SeriesGeometry, diameter_range_mm: tuple[float, float]
) -> Lesion:
    """Pick a lobe, a size and a centre well inside that lobe's lung."""
    nx, ny, nz = geometry.shape
    lobe = str(rng.choice(sorted(LOBES)))
    side, w_low, w_high = LOBES[lobe]
    w = rng.uniform(w_low + 0.03, w_high - 0.03)
    cu, cv = LUNG_CENTRES[side]
    a, b = LUNG_SEMI_AXES
    taper = float(_lung_taper(w))
    u = cu + rng.uniform(-0.3, 0.3) * a * taper
    v = cv + rng.uniform(-0.4, 0.4) * b * taper
    centre = (
        u * nx / 2 + (nx - 1) / 2,
        v * ny / 2 + (ny - 1) / 2,
        w * (nz - 1),
    )
    diameter = round(float(rng.uniform(*diameter_range_mm)), 1)
    return Lesion(tuple(round(float(c), 2) for c in centre), diameter, lobe)


def lesion_mask(geometry: SeriesGeometry, lesion: Lesion) -> np.ndarray:
    """Voxels within the lesion's sphere (in mm) that also lie inside its lung."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    ci, cj, ck = lesion.centre_ijk
    d_inplane = geometry.pixel_spacing_mm
    distance_sq = ((i - ci) * d_inplane) ** 2 + ((j - cj) * d_inplane) ** 2
    distance_sq = distance_sq + ((k - ck) * geometry.slice_spacing_mm) ** 2
    sphere = distance_sq <= (lesion.diameter_mm / 2) ** 2
    side = LOBES[lesion.lobe][0]
    mask = sphere & lung_masks(geometry.shape)[side]
    if not mask.any():  # a lesion thinner than a voxel still marks its centre voxel
        mask[tuple(int(round(c)) for c in lesion.centre_ijk)] = True
    return mask


def render_volume(
    rng: np.random.Generator,
    geometry: SeriesGeometry,
    mask: np.ndarray | None,
    lesion_contrast_hu: float,
    noise_hu: float,
) -> np.ndarray:
    """The final int16 HU volume: anatomy, lesion (if a mask is given), noise, clipped."""
    volume = anatomy_hu(geometry.shape)
    if mask is not None:
        volume[mask] = LUNG_HU + lesion_contrast_hu
    volume += rng.normal(0.0, noise_hu, size=volume.shape).astype(np.float32)
    return np.clip(np.rint(volume), HU_MIN, HU_MAX).astype(np.int16)
