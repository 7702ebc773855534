"""Plugin arrays onto the source series' own slices: resampling and the frame layout.

A heatmap may come on the network's grid (``Explanation.heatmap_affine``);
``on_image_grid`` resamples it onto the input volume's voxels, whatever the
plugin's preprocessing. ``volume_frames`` then lays an (i, j, k) array out as
DICOM frames: the ingest indexes a single-frame stack as (column, row, slice)
with slices in position order, so frame k is ``array[:, :, k].T`` (rows, columns),
and ``check_frames_match`` proves that against the source headers before
anything is written: a volume that does not sit on the slices is an error,
never a misplaced object.
"""

from __future__ import annotations

import numpy as np

from medplug.contract import ImageVolume, Prediction
from medplug.dicom_out.evidence import StudyEvidence
from medplug.errors import InputError, MedplugError
from medplug.ingest.geometry import LPS_TO_RAS

# Largest disagreement between the volume's affine and a slice header, in mm.
POSITION_TOLERANCE_MM = 0.01


class GeometryMismatchError(MedplugError, ValueError):
    """An array that cannot be written on the source series' slices."""


def on_image_grid(prediction: Prediction, image: ImageVolume) -> np.ndarray:
    """The prediction's heatmap sampled on ``image``'s voxel grid (same shape as its array)."""
    explanation = prediction.explanation
    if explanation is None or explanation.heatmap is None:
        raise InputError(
            f"plugin {prediction.plugin!r} returned no heatmap for this case",
            case_id=prediction.case_id,
        )
    return resample_to_grid(
        explanation.heatmap, explanation.heatmap_affine, image.array.shape, image.affine
    )


def resample_to_grid(
    heat: np.ndarray,
    heat_affine: np.ndarray | None,
    shape: tuple[int, ...],
    affine: np.ndarray,
) -> np.ndarray:
    """``heat`` (on ``heat_affine``'s grid) linearly sampled at every voxel of (shape, affine).

    Outside the heatmap's grid the value is 0: the model never saw that region.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == tuple(shape) and (heat_affine is None or np.allclose(heat_affine, affine)):
        return heat
    if heat_affine is None:
        raise InputError(
            f"heatmap shape {heat.shape} differs from image shape {tuple(shape)} and has no affine"
        )
    from scipy.ndimage import affine_transform

    image_to_heat = np.linalg.inv(np.asarray(heat_affine, dtype=float)) @ np.asarray(affine)
    ndim = heat.ndim
    if ndim == 2:  # 2D heatmap: use the in-plane part of the 4x4 affines
        image_to_heat = image_to_heat[np.ix_([0, 1, 3], [0, 1, 3])]
    return affine_transform(
        heat,
        image_to_heat[:ndim, :ndim],
        offset=image_to_heat[:ndim, ndim],
        output_shape=tuple(shape[:ndim]),
        order=1,
        mode="constant",
        cval=0.0,
    ).reshape(shape)


def check_frames_match(evidence: StudyEvidence, shape: tuple[int, ...]) -> None:
    """Raise ``GeometryMismatchError`` unless ``shape`` arrays sit one slice per instance.

    Checks the array shape against the volume the plugin read, then that voxel
    (0, 0, k) of that volume lies at slice k's Image Position (Patient), and that
    its i and j axes run along the slices' row and column directions.
    """
    if evidence.shape is None or evidence.affine is None:
        raise GeometryMismatchError("the evidence carries no volume geometry")
    if tuple(shape) != tuple(evidence.shape):
        raise GeometryMismatchError(
            f"array has shape {tuple(shape)} but the source volume has shape {evidence.shape}"
        )
    if not evidence.reference.get("FrameOfReferenceUID"):
        raise GeometryMismatchError(
            "the source series has no Frame of Reference UID: a map or mask cannot be "
            "registered to it"
        )
    n_slices = shape[2] if len(shape) >= 3 else 1
    if len(evidence.instances) != n_slices:
        raise GeometryMismatchError(
            f"the source series has {len(evidence.instances)} instances for {n_slices} slices "
            "(a multi-frame source is not supported for Parametric Map or SEG output)"
        )
    lps = np.linalg.inv(LPS_TO_RAS) @ evidence.affine  # voxel -> LPS
    orientation = evidence.reference.get("ImageOrientationPatient")
    if orientation is not None:
        row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        i_axis, j_axis = lps[:3, 0], lps[:3, 1]
        if not (
            np.allclose(i_axis / np.linalg.norm(i_axis), row, atol=1e-4)
            and np.allclose(j_axis / np.linalg.norm(j_axis), column, atol=1e-4)
        ):
            raise GeometryMismatchError("the volume's i/j axes are not the slices' rows/columns")
    for k, position in enumerate(evidence.positions):
        if position is None:
            raise GeometryMismatchError(f"source slice {k} has no Image Position (Patient)")
        expected = (lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        if np.max(np.abs(expected - np.asarray(position, float))) > POSITION_TOLERANCE_MM:
            raise GeometryMismatchError(f"volume slice {k} is not at source slice {k}'s position")


def volume_frames(array: np.ndarray) -> np.ndarray:
    """(i, j[, k]) -> (frames, rows, columns): frame k is slice k, rows along j."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise GeometryMismatchError(f"cannot lay out a {array.ndim}D array as frames")
    return np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
