"""Where on a source slice a result lies, as a closed 2D polyline an SR can carry.

OHIF (and most viewers) draw an SR's measurement group on the image only when
it has image coordinates on one slice (TID 1410, SCOORD). A heatmap gives the
slice holding its hottest voxel and the box around the >= half-maximum region
connected to that voxel; a segment gives the slice where it is largest and its
box there. Coordinates are DICOM SCOORD pixel coordinates: (column, row) =
(x, y), the top-left corner of the top-left pixel at (0, 0), so voxel (i, j)
covers [i, i+1] x [j, j+1] (the ingest indexes a slice as (column, row)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medplug.dicom_out.evidence import StudyEvidence

HALF_MAXIMUM = 0.5  # the heatmap region: values >= this fraction of the map's maximum


@dataclass(frozen=True)
class SliceRegion:
    """A closed polyline on one source slice (SCOORD pixel coordinates) and that slice."""

    slice_index: int  # array axis k of the volume the plugin read
    sop_class_uid: str
    sop_instance_uid: str
    polyline: tuple[tuple[float, float], ...]  # (column, row) points, last == first

    @property
    def points(self) -> np.ndarray:
        return np.asarray(self.polyline, dtype=np.float32)


Polyline = tuple[tuple[float, float], ...]


def box_polyline(columns: tuple[int, int], rows: tuple[int, int]) -> Polyline:
    """The closed outline of pixels columns[0]..columns[1], rows[0]..rows[1] (inclusive)."""
    left, right = float(columns[0]), float(columns[1] + 1)
    top, bottom = float(rows[0]), float(rows[1] + 1)
    return ((left, top), (right, top), (right, bottom), (left, bottom), (left, top))


def _on_slice(
    evidence: StudyEvidence, k: int, pixels: tuple[np.ndarray, ...]
) -> SliceRegion | None:
    """The box around ``pixels`` ((column, row) index arrays) on slice k."""
    if not 0 <= k < len(evidence.instances):
        return None
    columns, rows = pixels
    columns = (int(columns.min()), int(columns.max()))
    rows = (int(rows.min()), int(rows.max()))
    sop_class, sop_instance = evidence.instances[k]
    return SliceRegion(k, sop_class, sop_instance, box_polyline(columns, rows))


def _fits(array: np.ndarray, evidence: StudyEvidence) -> bool:
    """An (i, j[, k]) array with one slice per cited instance."""
    if array.ndim == 2:
        return len(evidence.instances) == 1
    return array.ndim == 3 and array.shape[2] == len(evidence.instances)


def heatmap_region(heat: np.ndarray, evidence: StudyEvidence) -> SliceRegion | None:
    """The box around the hottest voxel's >= half-maximum blob, on the hottest voxel's slice.

    ``heat`` is on the source grid (i, j, k). None when the map has no positive
    finite maximum or does not sit one slice per instance: no evidence to place it.
    """
    from scipy.ndimage import label

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim == 2:
        heat = heat[:, :, None]
    if not _fits(heat, evidence) or heat.size == 0:
        return None
    finite = np.where(np.isfinite(heat), heat, -np.inf)
    i, j, k = np.unravel_index(int(np.argmax(finite)), finite.shape)
    peak = float(finite[i, j, k])
    if not np.isfinite(peak) or peak <= 0:
        return None
    blobs, _ = label(finite[:, :, k] >= HALF_MAXIMUM * peak)
    return _on_slice(evidence, int(k), np.nonzero(blobs == blobs[i, j]))


def segment_region(mask: np.ndarray, evidence: StudyEvidence) -> SliceRegion | None:
    """The segment's bounding box on the slice where it has most voxels (None if empty)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[:, :, None]
    if not _fits(mask, evidence) or not mask.any():
        return None
    k = int(np.argmax(mask.sum(axis=(0, 1))))
    return _on_slice(evidence, k, np.nonzero(mask[:, :, k]))
