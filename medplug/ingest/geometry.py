"""Slice order and the voxel -> RAS affine of a stack of DICOM images.

Order comes from ImagePositionPatient projected on the slice normal
(row cosine x column cosine), never from file names or InstanceNumber, which
scanners and anonymisers get wrong. Every way a stack can fail to be one
regular volume gets its own ``SeriesGeometryError`` category, with the
positions involved named, so a PACS admin can find the broken series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medplug.ingest.errors import geometry_error

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4
SPACING_RELATIVE_TOLERANCE = 0.02  # of the median slice step
SPACING_ABSOLUTE_TOLERANCE = 0.01  # mm
TILT_TOLERANCE_DEG = 0.05


@dataclass
class StackGeometry:
    """How to order the slices of a stack and where its voxels are."""

    order: np.ndarray  # input index of each output slice k
    affine: np.ndarray  # voxel (i, j, k) -> RAS mm
    slice_step: float | None = None
    gantry_tilt_deg: float = 0.0
    warnings: list[str] = field(default_factory=list)


def in_plane_affine(
    orientation: tuple[float, ...] | None,
    pixel_spacing: tuple[float, ...] | None,
    position: tuple[float, ...] | None,
) -> np.ndarray:
    """LPS affine of one image: i along the row cosine, j along the column cosine."""
    row_cosine, column_cosine = _cosines(orientation)
    row_spacing, column_spacing = (pixel_spacing or (1.0, 1.0))[:2]
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * float(column_spacing)
    affine[:3, 1] = column_cosine * float(row_spacing)
    affine[:3, 2] = np.cross(row_cosine, column_cosine)
    affine[:3, 3] = np.asarray(position if position is not None else (0.0, 0.0, 0.0), float)
    return affine


def _cosines(orientation: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    if orientation is None or len(orientation) != 6:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    values = np.asarray(orientation, float)
    return values[:3], values[3:]


def stack_geometry(
    where: Path | None,
    positions: np.ndarray,
    orientations: np.ndarray,
    pixel_spacings: np.ndarray,
    sizes: np.ndarray,
    *,
    fallback_step: float | None = None,
    allow_tilt: bool = False,
) -> StackGeometry:
    """Check that n images form one regular volume; return their order and affine.

    ``positions`` (n, 3) and ``orientations`` (n, 6) in LPS as stored;
    ``pixel_spacings`` (n, 2) as (row, column) spacing; ``sizes`` (n, 2) rows, columns.
    """
    n = len(positions)
    if not np.all(sizes == sizes[0]):
        shapes = sorted({f"{r}x{c}" for r, c in sizes.tolist()})
        raise geometry_error(where, "mixed_size", f"images have different sizes {shapes}")
    if not np.allclose(orientations, orientations[0], atol=ORIENTATION_TOLERANCE):
        distinct = np.unique(np.round(orientations, 3), axis=0)
        raise geometry_error(
            where,
            "mixed_orientation",
            f"{len(distinct)} different ImageOrientationPatient values in one series",
        )
    if not np.allclose(pixel_spacings, pixel_spacings[0], rtol=1e-3, atol=1e-4):
        seen = sorted({tuple(round(float(v), 4) for v in s) for s in pixel_spacings.tolist()})
        raise geometry_error(
            where, "mixed_pixel_spacing", f"images have different PixelSpacing {seen}"
        )
    affine = in_plane_affine(tuple(orientations[0]), tuple(pixel_spacings[0]), None)
    normal = affine[:3, 2].copy()
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    sorted_positions = positions[order]
    sorted_distance = distance[order]
    geometry = StackGeometry(order=order, affine=affine)
    if n == 1:
        affine[:3, 2] = normal * float(fallback_step or 1.0)
        affine[:3, 3] = sorted_positions[0]
        geometry.affine = LPS_TO_RAS @ affine
        return geometry

    steps = np.diff(sorted_distance)
    _check_steps(where, steps, sorted_distance)
    step_vector = (sorted_positions[-1] - sorted_positions[0]) / (n - 1)
    along = float(step_vector @ normal)
    in_plane = step_vector - along * normal
    tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), abs(along))))
    if tilt_deg > TILT_TOLERANCE_DEG:
        if not allow_tilt:
            raise geometry_error(
                where,
                "gantry_tilt",
                f"slices are sheared by {tilt_deg:.2f} deg (gantry/detector tilt); "
                "resample the series or load with allow_tilt=True for a sheared affine",
            )
        geometry.warnings.append(f"gantry tilt {tilt_deg:.2f} deg kept as a sheared affine")
        geometry.gantry_tilt_deg = tilt_deg
    else:
        step_vector = along * normal  # drop sub-tolerance in-plane jitter
    affine[:3, 2] = step_vector
    affine[:3, 3] = sorted_positions[0]
    geometry.affine = LPS_TO_RAS @ affine
    geometry.slice_step = along
    return geometry


def _check_steps(where: Path | None, steps: np.ndarray, distance: np.ndarray) -> None:
    """Name duplicate positions, missing slices and uneven spacing."""
    median = float(np.median(steps))
    duplicates = int(np.sum(steps < max(SPACING_ABSOLUTE_TOLERANCE, 1e-3 * abs(median))))
    if duplicates:
        raise geometry_error(
            where,
            "duplicate_positions",
            f"{duplicates} of {len(steps) + 1} images repeat a slice position "
            "(several echoes, phases or acquisitions in one series?)",
        )
    tolerance = max(SPACING_RELATIVE_TOLERANCE * median, SPACING_ABSOLUTE_TOLERANCE)
    bad = np.flatnonzero(np.abs(steps - median) > tolerance)
    if bad.size == 0:
        return
    ratios = steps[bad] / median
    gaps = np.rint(ratios)
    if np.all(ratios > 1.5) and np.allclose(ratios, gaps, atol=0.1):
        missing = int(np.sum(gaps - 1))
        where_missing = ", ".join(
            f"between {distance[i]:.2f} and {distance[i + 1]:.2f} mm" for i in bad[:5]
        )
        raise geometry_error(
            where,
            "missing_slices",
            f"{missing} slice(s) missing for a step of {median:.3f} mm ({where_missing}"
            + (", ..." if bad.size > 5 else "")
            + ")",
        )
    raise geometry_error(
        where,
        "uneven_spacing",
        f"slice steps range from {steps.min():.3f} to {steps.max():.3f} mm "
        f"(median {median:.3f} mm, {bad.size} step(s) off by more than {tolerance:.3f} mm)",
    )
