"""Header sanity checks run before any pixel array is allocated.

A header is attacker-controlled: Rows x Columns x Frames can promise
gigabytes a 10 kB file does not hold, a NaN position gives a NaN affine that
only fails deep inside MONAI, a zero slope turns every voxel into the
intercept. Each check names the file and a category from
``LOAD_CATEGORIES`` (``too_large``, ``truncated``, ``bad_pixel_description``,
``bad_geometry``, ``bad_rescale``), so a PACS admin can find the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medplug.ingest._tag_walker import NATIVE_LITTLE_ENDIAN
from medplug.ingest.errors import DicomError, ingest_error
from medplug.ingest.header import InstanceHeader

# Largest output volume ingest builds (bytes of the float array); override per deployment.
MAX_VOLUME_ENV = "MEDPLUG_MAX_VOLUME_BYTES"
DEFAULT_MAX_VOLUME_BYTES = 8 << 30  # `medplug serve` lowers it for uploads (--max-volume-mib)


def max_volume_bytes() -> int:
    """The largest decoded volume ingest will allocate: read at each load, so a
    server can set a lower bound for hostile uploads after medplug is imported."""
    return int(os.environ.get(MAX_VOLUME_ENV, DEFAULT_MAX_VOLUME_BYTES))


# Compressed data may expand this much before a declared size is called a lie
# (lossless codecs reach a few hundred on blank images); small images are exempt.
MAX_COMPRESSION_RATIO = 1000
RATIO_EXEMPT_BYTES = 64 << 20
NATIVE_SYNTAXES = NATIVE_LITTLE_ENDIAN | {"1.2.840.10008.1.2.2"}
# Integers beyond 2**24 do not survive float32; such images load as float64.
FLOAT32_EXACT_BITS = 24
UNIT_TOLERANCE = 0.02  # |row|, |column| within 1 +- this; |row . column| below it


def check_instance(header: InstanceHeader) -> None:
    """Every header check for one file; raises a ``DicomError`` naming the file."""
    check_pixel_description(header)
    check_size(header)
    for name in ("pixel_spacing", "imager_pixel_spacing"):
        if _all_zero(getattr(header, name)):
            # Written by some vendors for "unknown": treat as absent (1 mm, with a warning).
            setattr(header, name, None)
            header.extra.setdefault("zero_spacing", []).append(name)
    spacing = header.pixel_spacing or header.imager_pixel_spacing
    if spacing is not None:
        check_spacing(header.path, spacing)
    if header.image_position is not None:
        check_position(header.path, header.image_position)
    if header.image_orientation is not None:
        check_orientation(header.path, header.image_orientation)
    check_rescale(header.path, header.rescale_slope, header.rescale_intercept)
    check_rescaled_range(header)


def check_rescaled_range(header: InstanceHeader) -> None:
    """Stored values times slope plus intercept stay finite in the output type."""
    bits = header.bits_stored or header.bits_allocated
    largest = 2.0 ** min(bits, 64)
    slope = abs(header.rescale_slope) if header.rescale_slope is not None else 1.0
    intercept = abs(header.rescale_intercept or 0.0)
    limit = float(np.finfo(output_dtype([header])).max)
    if largest * slope + intercept > limit:
        raise ingest_error(
            header.path,
            "bad_rescale",
            f"RescaleSlope {slope:g} / Intercept {intercept:g} overflow the output values",
        )


def check_pixel_description(header: InstanceHeader) -> None:
    """Rows, Columns, Bits, Samples and Frames describe a possible image."""
    path = header.path
    problems = []
    if header.rows <= 0 or header.columns <= 0:
        problems.append(f"Rows {header.rows} x Columns {header.columns}")
    if header.frames <= 0:
        problems.append(f"NumberOfFrames {header.frames}")
    if header.bits_allocated not in (1, 8, 16, 32, 64):
        problems.append(f"BitsAllocated {header.bits_allocated}")
    if header.bits_stored and not 0 < header.bits_stored <= max(header.bits_allocated, 1):
        problems.append(f"BitsStored {header.bits_stored} > BitsAllocated {header.bits_allocated}")
    if header.samples_per_pixel not in (1, 3, 4):
        problems.append(f"SamplesPerPixel {header.samples_per_pixel}")
    if header.pixel_representation not in (0, 1):
        problems.append(f"PixelRepresentation {header.pixel_representation}")
    if problems:
        raise ingest_error(path, "bad_pixel_description", "impossible " + ", ".join(problems))


def declared_pixel_bytes(header: InstanceHeader) -> int:
    """Bytes of uncompressed pixel data the header promises."""
    samples = header.samples_per_pixel
    if header.photometric == "YBR_FULL_422" and samples == 3:
        samples = 2  # chroma subsampled 2:1 horizontally: 4 values per 2 pixels
    values = header.rows * header.columns * max(header.frames, 1) * samples
    return (values * header.bits_allocated + 7) // 8


def output_bytes(header: InstanceHeader) -> int:
    """Bytes of the float array this file becomes (RGB for palette colour)."""
    samples = 3 if header.photometric == "PALETTE COLOR" else header.samples_per_pixel
    itemsize = np.dtype(output_dtype([header])).itemsize
    return header.rows * header.columns * max(header.frames, 1) * samples * itemsize


def check_size(header: InstanceHeader) -> None:
    """The declared image fits the size limit and the bytes actually present."""
    path = header.path
    wanted = output_bytes(header)
    limit = max_volume_bytes()
    if wanted > limit:
        raise ingest_error(
            path,
            "too_large",
            f"{header.rows} x {header.columns} x {header.frames} frames x "
            f"{header.samples_per_pixel} samples would need {_mib(wanted)}, over the "
            f"{_mib(limit)} limit ({MAX_VOLUME_ENV})",
        )
    declared = declared_pixel_bytes(header)
    if header.pixel_offset is not None and header.pixel_length is not None:
        if header.pixel_offset + header.pixel_length > header.file_size:
            raise ingest_error(
                path,
                "truncated",
                f"Pixel Data declares {header.pixel_length} bytes but the file ends "
                f"after {max(header.file_size - header.pixel_offset, 0)}",
            )
    if header.transfer_syntax in NATIVE_SYNTAXES or not header.transfer_syntax:
        available = header.file_size
        if header.pixel_offset is not None and header.pixel_length is not None:
            available = header.pixel_length
        if declared > available:
            category = "truncated" if header.pixel_length is None else "bad_pixel_description"
            raise ingest_error(
                path,
                category,
                f"Rows x Columns x Frames x Samples x Bits need {declared} bytes of pixel "
                f"data, only {available} present",
            )
        return
    limit = max(RATIO_EXEMPT_BYTES, MAX_COMPRESSION_RATIO * max(header.file_size, 1))
    if declared > limit:
        raise ingest_error(
            path,
            "too_large",
            f"declares {_mib(declared)} of pixels in a {header.file_size}-byte file "
            f"(more than {MAX_COMPRESSION_RATIO}:1 compression)",
        )


def check_series_size(instances: Sequence[InstanceHeader]) -> None:
    """The whole volume fits the size limit (checked before the stack is allocated)."""
    total = sum(output_bytes(instance) for instance in instances)
    limit = max_volume_bytes()
    if total > limit:
        raise ingest_error(
            instances[0].path.parent,
            "too_large",
            f"{len(instances)} images would need {_mib(total)}, over the "
            f"{_mib(limit)} limit ({MAX_VOLUME_ENV})",
        )


def _all_zero(values: Sequence[float] | None) -> bool:
    if not values:
        return False
    return all(v == 0 for v in values)


def _finite(values: Sequence[float]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def check_spacing(path: Path | None, spacing: Sequence[float], name: str = "PixelSpacing") -> None:
    """Two finite, positive spacings (``0\\0``, some vendors' "unknown", is dropped earlier)."""
    if len(spacing) < 2:
        raise ingest_error(path, "bad_geometry", f"{name} has {len(spacing)} value(s), needs 2")
    if not _finite(spacing[:2]) or min(spacing[:2]) <= 0:
        raise ingest_error(path, "bad_geometry", f"{name} {_fmt(spacing[:2])} is not positive")


def check_position(path: Path | None, position: Sequence[float]) -> None:
    """Three finite coordinates."""
    if len(position) != 3:
        raise ingest_error(
            path, "bad_geometry", f"ImagePositionPatient has {len(position)} value(s), needs 3"
        )
    if not _finite(position):
        raise ingest_error(path, "bad_geometry", f"ImagePositionPatient {_fmt(position)}")


def check_orientation(path: Path | None, orientation: Sequence[float]) -> None:
    """Two finite, unit-length, orthogonal direction cosines."""
    if len(orientation) != 6:
        raise ingest_error(
            path,
            "bad_geometry",
            f"ImageOrientationPatient has {len(orientation)} value(s), needs 6",
        )
    if not _finite(orientation):
        raise ingest_error(path, "bad_geometry", f"ImageOrientationPatient {_fmt(orientation)}")
    row = np.asarray(orientation[:3], float)
    column = np.asarray(orientation[3:], float)
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(column)))
    if any(abs(n - 1.0) > UNIT_TOLERANCE for n in norms):
        raise ingest_error(
            path,
            "bad_geometry",
            f"ImageOrientationPatient cosines have lengths {_fmt(norms)}, not 1",
        )
    if abs(float(row @ column)) > UNIT_TOLERANCE:
        raise ingest_error(
            path, "bad_geometry", "ImageOrientationPatient row and column are not orthogonal"
        )


def check_rescale(path: Path | None, slope: float | None, intercept: float | None) -> None:
    """A finite, non-zero slope and a finite intercept (absent means identity)."""
    if slope is not None and (not _finite([slope]) or slope == 0):
        raise ingest_error(path, "bad_rescale", f"RescaleSlope {_fmt([slope])}")
    if intercept is not None and not _finite([intercept]):
        raise ingest_error(path, "bad_rescale", f"RescaleIntercept {_fmt([intercept])}")


def positive_or_none(value: float | None) -> float | None:
    """A slice step/thickness usable as a fallback spacing, else ``None``."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


def output_dtype(instances: Sequence[InstanceHeader]) -> type[np.floating]:
    """float32, or float64 when stored integers exceed what float32 holds exactly."""
    for instance in instances:
        if (instance.bits_stored or instance.bits_allocated) > FLOAT32_EXACT_BITS:
            return np.float64
    return np.float32


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, int | float) else "?" for v in values) + "]"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


__all__ = [
    "max_volume_bytes",
    "DicomError",
    "check_instance",
    "check_orientation",
    "check_position",
    "check_rescale",
    "check_series_size",
    "check_size",
    "check_spacing",
    "output_dtype",
    "positive_or_none",
]
