"""One scanned series -> one ``ImageVolume`` (array (i, j, k) = (column, row, slice), RAS affine).

Three shapes of series, three paths:
- a stack of single-frame files (CT, MR, PET): geometry from the headers the
  scan already read, then each slice is read straight into a preallocated
  float array (float32; float64 for integers over 24 bits) (native files with
  ``np.fromfile``, in a few threads);
- multi-frame objects (enhanced CT/MR, legacy multi-frame, cine): decoded by
  pydicom, frame positions from the per-frame functional groups;
- a single 2D image (CR, DX, secondary capture): a 2D volume.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import config
from pydicom.uid import UID

from medplug.contract import ImageVolume
from medplug.ingest.checks import (
    check_instance,
    check_orientation,
    check_position,
    check_rescale,
    check_series_size,
    check_spacing,
    output_dtype,
    positive_or_none,
)
from medplug.ingest.errors import UnsupportedPixelFormatError, geometry_error, ingest_error
from medplug.ingest.functional_groups import frame_values
from medplug.ingest.geometry import LPS_TO_RAS, in_plane_affine, stack_geometry
from medplug.ingest.guard import guarded, quiet_warnings
from medplug.ingest.header import InstanceHeader
from medplug.ingest.pixels import (
    can_read_fast,
    decode_frames,
    read_dataset,
    read_fast,
    rescale,
    stored_range,
    to_float,
)
from medplug.ingest.scan import SeriesInfo

# Below this many slices a thread pool costs more than it saves.
_THREADS_MIN_SLICES = 16


def load_series(
    series: SeriesInfo,
    *,
    allow_tilt: bool = False,
    workers: int | None = None,
    c_order: bool = False,
) -> ImageVolume:
    """Load a scanned series as a float32 volume in rescaled units (HU for CT).

    ``c_order`` changes only the memory layout of a slice stack, never its
    values: the (x, y, z) array is C-contiguous (what MONAI's ``LoadImage``
    needs) instead of a view of the (z, y, x) slice buffer.

    float64 instead when stored integers exceed what float32 holds exactly
    (BitsStored > 24). Raises a ``DicomError`` (``SeriesGeometryError`` for
    geometry) with a stable ``category`` when the files do not form one
    regular image, and for any failure of a parser or decoder underneath:
    nothing else escapes. Every header is checked before pixels are read.
    """
    instances = series.instances
    where = instances[0].path if len(instances) == 1 else instances[0].path.parent
    with quiet_warnings(where), guarded(where, "unreadable", "loading the series"):
        if series.truncated:
            raise ingest_error(
                series.truncated[0],
                "truncated",
                f"this file of the series is cut short ({len(series.truncated)} such file(s)); "
                "the series is incomplete",
            )
        duplicates = _check_duplicates(series)
        for instance in instances:
            check_instance(instance)
        check_series_size(instances)
        if any(i.frames > 1 or i.extra.get("functional_groups") for i in instances):
            volume = _load_multiframe(series, allow_tilt)
        elif len(instances) == 1:
            volume = _load_single_image(series, instances[0])
        else:
            volume = _load_stack(series, allow_tilt, workers, c_order)
        if duplicates:
            volume.meta["warnings"].append(duplicates)
        return volume


_DUPLICATE_FIELDS = (
    "rows",
    "columns",
    "frames",
    "samples_per_pixel",
    "image_position",
    "image_orientation",
    "pixel_spacing",
)


def _check_duplicates(series: SeriesInfo) -> str | None:
    """Refuse copies of one SOP Instance UID that disagree; else a warning line."""
    if not series.duplicates:
        return None
    kept = {i.sop_instance_uid: i for i in series.instances if i.sop_instance_uid}
    for copy in series.duplicates:
        original = kept[copy.sop_instance_uid]
        differs = [f for f in _DUPLICATE_FIELDS if getattr(copy, f) != getattr(original, f)]
        if differs:
            raise ingest_error(
                copy.path,
                "duplicate_instances",
                f"has the SOP Instance UID of {original.path.name} but a different "
                f"{', '.join(differs)}; remove one of the two",
            )
    return (
        f"{len(series.duplicates)} duplicate file(s) (same SOP Instance UID as another "
        "file) ignored, e.g. " + series.duplicates[0].path.name
    )


# --------------------------------------------------------------------------- stacks


def _load_stack(
    series: SeriesInfo, allow_tilt: bool, workers: int | None, c_order: bool = False
) -> ImageVolume:
    instances = series.instances
    where = instances[0].path.parent
    missing = [i for i in instances if i.image_position is None or not i.image_orientation]
    if missing:
        raise geometry_error(
            where,
            "missing_geometry",
            f"{len(missing)} of {len(instances)} images lack ImagePositionPatient or "
            "ImageOrientationPatient, so they cannot be stacked; load the files one by one",
        )
    if any(i.samples_per_pixel != 1 for i in instances):
        raise UnsupportedPixelFormatError(where, "colour images cannot be stacked into a volume")
    warnings: list[str] = []
    spacings = []
    for instance in instances:
        spacing = instance.pixel_spacing or instance.imager_pixel_spacing
        spacings.append(spacing[:2] if spacing and len(spacing) >= 2 else (1.0, 1.0))
    if not instances[0].pixel_spacing:
        warnings.append("no PixelSpacing: in-plane spacing assumed 1 mm")
    geometry = stack_geometry(
        where,
        # Every instance has both (checked above); "or ()" only tells the type checker.
        np.asarray([(i.image_position or ())[:3] for i in instances], float),
        np.asarray([(i.image_orientation or ())[:6] for i in instances], float),
        np.asarray(spacings, float),
        np.asarray([(i.rows, i.columns) for i in instances]),
        allow_tilt=allow_tilt,
    )
    warnings.extend(geometry.warnings)
    ordered = [instances[index] for index in geometry.order]
    first = ordered[0]
    plane = (first.rows, first.columns)
    dtype = output_dtype(ordered)

    def decode_into(k: int, out: np.ndarray) -> None:
        instance = ordered[k]
        if can_read_fast(instance):
            stored = read_fast(instance)
        else:
            stored = decode_frames(instance, read_dataset(instance))[0]
            if stored.shape != plane:
                raise UnsupportedPixelFormatError(
                    instance.path, f"decoded shape {stored.shape} != {plane}"
                )
        to_float(
            stored,
            out,
            *rescale(instance),
            instance.photometric == "MONOCHROME1",
            stored_range(instance),
        )

    workers = workers if workers is not None else min(4, (os.cpu_count() or 1) + 1)
    if c_order:
        array = _stack_c_order(len(ordered), plane, dtype, decode_into, workers)
    else:
        buffer = np.empty((len(ordered), *plane), dtype=dtype)
        _run_parallel(lambda k: decode_into(k, buffer[k]), range(len(ordered)), workers)
        array = buffer.transpose(2, 1, 0)  # (x, y, z) view of the (z, y, x) slice stack
    meta = _series_meta(series, ordered, warnings)
    meta["slice_step"] = geometry.slice_step
    meta["gantry_tilt_deg"] = geometry.gantry_tilt_deg
    return _volume(series, array, geometry.affine, ordered, meta)


# Slices decoded and transposed together in ``_stack_c_order``: 16 float32 values
# along z fill one 64-byte cache line of the output, and 16 slices of 512x512
# (16 MiB, twice) stay in this machine's 32 MiB L3.
_C_ORDER_GROUP = 16


def _stack_c_order(
    depth: int,
    plane: tuple[int, int],
    dtype: type[np.floating],
    decode_into: Any,
    workers: int,
) -> np.ndarray:
    """The (x, y, z) volume C-contiguous, written once, while decoding.

    DICOM stores (z, y, x); MONAI needs (x, y, z) in C order. Copying a decoded
    stack into that order afterwards reads and writes the whole volume again
    with z innermost (one cache miss per voxel for numpy). Here each group of
    ``_C_ORDER_GROUP`` slices is decoded into a scratch buffer, each slice
    transposed in cache, then the group written as one (x*y, group) block with
    torch's blocked transpose copy. torch is imported only on this path (the
    MONAI reader), where it is loaded already.
    """
    import torch

    rows, columns = plane
    out = np.empty((columns, rows, depth), dtype=dtype)
    target = torch.from_numpy(out.reshape(columns * rows, depth))
    scratch = threading.local()

    def fill_group(start: int) -> None:
        count = min(_C_ORDER_GROUP, depth - start)
        if getattr(scratch, "decoded", None) is None:
            scratch.decoded = np.empty(plane, dtype=dtype)
            scratch.group = np.empty((_C_ORDER_GROUP, columns, rows), dtype=dtype)
        group = scratch.group
        for offset in range(count):
            decode_into(start + offset, scratch.decoded)
            torch.from_numpy(group[offset]).copy_(torch.from_numpy(scratch.decoded).T)
        block = torch.from_numpy(group[:count].reshape(count, columns * rows))
        target[:, start : start + count].copy_(block.T)

    _run_parallel(fill_group, range(0, depth, _C_ORDER_GROUP), workers, min_items=2)
    return out


def _run_parallel(
    job: Any, items: range, workers: int, min_items: int = _THREADS_MIN_SLICES
) -> None:
    """``job(item)`` for every item, on a thread pool when there are enough items."""
    if workers > 1 and len(items) >= min_items:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(job, items))
    else:
        for item in items:
            job(item)


# --------------------------------------------------------------------------- single images


def _load_single_image(series: SeriesInfo, instance: InstanceHeader) -> ImageVolume:
    if can_read_fast(instance):
        stored = read_fast(instance)
    else:
        stored = decode_frames(instance, read_dataset(instance))[0]
    warnings: list[str] = []
    image = np.empty(stored.shape, dtype=output_dtype([instance]))
    to_float(
        stored,
        image,
        *rescale(instance),
        instance.photometric == "MONOCHROME1",
        stored_range(instance),
    )
    spacing = instance.pixel_spacing or instance.imager_pixel_spacing
    if not spacing:
        warnings.append("no PixelSpacing or ImagerPixelSpacing: spacing assumed 1 mm")
    elif not instance.pixel_spacing:
        warnings.append("spacing from ImagerPixelSpacing (at the detector, not the patient)")
    affine = in_plane_affine(instance.image_orientation, spacing, instance.image_position)
    affine[:3, 2] *= positive_or_none(instance.slice_thickness) or 1.0
    array = image.transpose(1, 0, 2) if image.ndim == 3 else image.T
    meta = _series_meta(series, [instance], warnings)
    if image.ndim == 3:
        meta["original_channel_dim"] = -1
    return _volume(series, array, LPS_TO_RAS @ affine, [instance], meta)


# --------------------------------------------------------------------------- multi-frame


def _load_multiframe(series: SeriesInfo, allow_tilt: bool) -> ImageVolume:
    """Decode every file, collect frames with their own geometry, then stack like slices."""
    frames: list[np.ndarray] = []
    positions: list[Any] = []
    orientations: list[Any] = []
    spacings: list[Any] = []
    rescales: list[tuple[float, float]] = []
    warnings: list[str] = []
    first = series.instances[0]
    for instance in series.instances:
        ds = read_dataset(instance)
        decoded = decode_frames(instance, ds)
        for index in range(decoded.shape[0]):
            with guarded(instance.path, "bad_geometry", f"reading frame {index + 1} geometry"):
                frame_geometry = _frame_geometry(ds, index, instance)
            _check_frame(instance.path, frame_geometry)
            frames.append(decoded[index])
            positions.append(frame_geometry.position)
            orientations.append(frame_geometry.orientation)
            spacings.append(frame_geometry.spacing)
            rescales.append(frame_geometry.rescale)
    colour = frames[0].ndim == 3
    shapes = {frame.shape for frame in frames}
    if len(shapes) > 1:
        raise geometry_error(first.path, "mixed_size", f"frames have different sizes {shapes}")
    have_geometry = all(p is not None for p in positions) and all(
        o is not None for o in orientations
    )
    step = positive_or_none(first.spacing_between_slices) or positive_or_none(first.slice_thickness)
    if len(frames) == 1:
        have_geometry = False
    if have_geometry:
        geometry = stack_geometry(
            first.path,
            np.asarray(positions, float),
            np.asarray(orientations, float),
            np.asarray([s or (1.0, 1.0) for s in spacings], float),
            np.asarray([frame.shape[:2] for frame in frames]),
            allow_tilt=allow_tilt,
        )
        order = geometry.order
        affine = geometry.affine
        warnings.extend(geometry.warnings)
    else:
        order = np.arange(len(frames))
        affine = in_plane_affine(orientations[0], spacings[0], positions[0])
        affine[:3, 2] *= step or 1.0
        affine = LPS_TO_RAS @ affine
        if len(frames) > 1:
            warnings.append(
                "frames carry no per-frame position: stacked in stored order"
                + (f" with {step} mm spacing" if step else " with 1 mm spacing")
            )
    buffer = np.empty((len(frames), *frames[0].shape), dtype=output_dtype(series.instances))
    monochrome1 = first.photometric == "MONOCHROME1"
    for k, index in enumerate(order):
        slope, intercept = rescales[index]
        to_float(frames[index], buffer[k], slope, intercept, monochrome1, stored_range(first))
    if len(frames) == 1:
        array = buffer[0].transpose(1, 0, 2) if colour else buffer[0].T
    else:
        array = buffer.transpose(2, 1, 0, 3) if colour else buffer.transpose(2, 1, 0)
    meta = _series_meta(series, series.instances, warnings)
    meta["multi_frame"] = True
    if colour:
        meta["original_channel_dim"] = -1
    return _volume(series, array, affine, series.instances, meta)


@dataclass(frozen=True)
class _Frame:
    """One frame's geometry and rescale, after the fallbacks to the top-level header."""

    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None
    rescale: tuple[float, float]


def _frame_geometry(ds: Any, index: int, instance: InstanceHeader) -> _Frame:
    """Position, orientation, spacing and rescale of one frame (functional groups first)."""
    found, per_frame = frame_values(ds, index)
    position, orientation = found.position, found.orientation
    if not per_frame:
        position, orientation = _legacy_plane(instance, index, position, orientation)
    return _Frame(
        position=position,
        orientation=orientation,
        spacing=found.spacing or instance.pixel_spacing or instance.imager_pixel_spacing,
        rescale=found.rescale or rescale(instance),
    )


def _legacy_plane(
    instance: InstanceHeader,
    index: int,
    position: tuple[float, ...] | None,
    orientation: tuple[float, ...] | None,
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Legacy multi-frame: one position for the first frame, frames along the normal."""
    if instance.image_orientation and instance.image_position and instance.spacing_between_slices:
        normal = np.cross(instance.image_orientation[:3], instance.image_orientation[3:6])
        start = np.asarray(instance.image_position[:3], float)
        position = tuple(start + index * instance.spacing_between_slices * normal)
        orientation = tuple(instance.image_orientation[:6])
    orientation = orientation or (
        tuple(instance.image_orientation[:6]) if instance.image_orientation else None
    )
    if position is None and instance.image_position and index == 0:
        position = tuple(instance.image_position[:3])
    return position, orientation


def _check_frame(path: Path, found: _Frame) -> None:
    """Per-frame values pass the same checks as a header's."""
    if found.position is not None:
        check_position(path, found.position)
    if found.orientation is not None:
        check_orientation(path, found.orientation)
    if found.spacing is not None:
        check_spacing(path, found.spacing)
    check_rescale(path, *found.rescale)


# --------------------------------------------------------------------------- metadata


def _series_meta(
    series: SeriesInfo, instances: list[InstanceHeader], warnings: list[str]
) -> dict[str, Any]:
    """Facts a viewer or plugin needs; no patient-identifying fields."""
    first = instances[0]
    if any(i.extra.get("zero_spacing") for i in instances):
        warnings = [*warnings, "PixelSpacing 0\\0 (vendor's 'unknown') ignored"]
    rescales = [rescale(i) for i in instances]
    slopes = {slope for slope, _ in rescales}
    intercepts = {intercept for _, intercept in rescales}
    return {
        "series_description": series.description,
        "series_number": series.number,
        "sop_class": UID(first.sop_class_uid, validation_mode=config.IGNORE).name
        if first.sop_class_uid
        else "",
        "image_type": list(series.image_type),
        "photometric": first.photometric,
        "transfer_syntaxes": series.transfer_syntax_names,
        "n_files": len(instances),
        "rescale_slope": slopes.pop() if len(slopes) == 1 else None,
        "rescale_intercept": intercepts.pop() if len(intercepts) == 1 else None,
        "monochrome1_inverted": first.photometric == "MONOCHROME1",
        "warnings": list(warnings),
    }


def _volume(
    series: SeriesInfo,
    array: np.ndarray,
    affine: np.ndarray,
    instances: list[InstanceHeader],
    meta: dict[str, Any],
) -> ImageVolume:
    sources = {str(i.path.parent) for i in instances}
    source = sources.pop() if len(sources) == 1 else str(Path(os.path.commonpath(list(sources))))
    return ImageVolume(
        array=array,
        affine=affine,
        modality=series.modality or None,
        study_uid=series.study_uid or None,
        series_uid=series.series_uid or None,
        sop_uids=list(dict.fromkeys(i.sop_instance_uid for i in instances)),
        source=source if len(instances) > 1 else str(instances[0].path),
        meta=meta,
    )
