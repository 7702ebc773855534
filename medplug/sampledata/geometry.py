"""Where each voxel of a synthetic series sits in patient space.

One object holds the grid so the DICOM headers and the NIfTI affine are
computed from the same numbers and cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Axial slices: rows run along +x (patient left), columns along +y (posterior).
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class SeriesGeometry:
    """An axial grid: voxel (i, j, k) = column i, row j, slice k (k along the normal)."""

    shape: tuple[int, int, int]
    pixel_spacing_mm: float
    slice_spacing_mm: float
    origin_lps: tuple[float, float, float]  # centre of voxel (0, 0, 0)

    @property
    def row_direction(self) -> np.ndarray:
        return np.array(AXIAL_ORIENTATION[:3])

    @property
    def column_direction(self) -> np.ndarray:
        return np.array(AXIAL_ORIENTATION[3:])

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def slice_position_lps(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice k, rounded so it survives a DS round trip."""
        position = np.array(self.origin_lps) + k * self.slice_spacing_mm * self.normal
        return tuple(round(float(value), 4) for value in position)

    def affine_lps(self) -> np.ndarray:
        """Voxel (i, j, k) -> DICOM patient coordinates (LPS, mm)."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_direction * self.pixel_spacing_mm
        affine[:3, 1] = self.column_direction * self.pixel_spacing_mm
        affine[:3, 2] = self.normal * self.slice_spacing_mm
        affine[:3, 3] = self.slice_position_lps(0)
        return affine

    def affine_ras(self) -> np.ndarray:
        """Voxel (i, j, k) -> NIfTI world coordinates (RAS): LPS with x and y negated."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()


def draw_geometry(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    pixel_spacing_mm: float,
    slice_spacing_mm: float,
) -> SeriesGeometry:
    """A grid roughly centred on the patient, with a case-specific table position."""
    nx, ny, _ = shape
    x0 = -(nx - 1) / 2 * pixel_spacing_mm + rng.uniform(-5, 5)
    y0 = -(ny - 1) / 2 * pixel_spacing_mm + rng.uniform(-15, 5)
    z0 = rng.uniform(-420, -300)
    origin = (round(x0, 3), round(y0, 3), round(z0, 3))
    return SeriesGeometry(tuple(shape), pixel_spacing_mm, slice_spacing_mm, origin)
