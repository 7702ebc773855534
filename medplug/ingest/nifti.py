"""NIfTI through nibabel, into the same ``ImageVolume`` convention as DICOM.

nibabel already indexes arrays (i, j, k) with a voxel -> RAS affine, which is
the convention medplug (and MONAI) use, so nothing is flipped here: a NIfTI
written from a DICOM-derived volume reads back with the identical affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np

from medplug.contract import ImageVolume
from medplug.ingest.errors import DicomError

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr")


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | Path) -> ImageVolume:
    """A NIfTI file as float32 with its scaling (scl_slope/inter) applied."""
    path = Path(path)
    try:
        # .nii / .nii.gz: nibabel returns a Nifti1Image (or its subclass Nifti2Image)
        image = cast(nib.Nifti1Image, nib.load(str(path)))
        _check_nifti_size(path, image)
        array = np.asarray(image.get_fdata(dtype=np.float32))
        affine = np.asarray(image.affine, dtype=np.float64)
    except FileNotFoundError:
        raise DicomError(path, "not_found", "no such file") from None
    except DicomError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - nibabel raises ImageFileError, EOFError, zlib ...
        raise DicomError(
            path, "unreadable", f"not a readable NIfTI file ({type(exc).__name__})"
        ) from None
    if (
        affine.shape != (4, 4)
        or not np.all(np.isfinite(affine))
        or not np.linalg.det(affine[:3, :3])
    ):
        raise DicomError(path, "bad_geometry", "NIfTI affine is not finite or is degenerate")
    header = image.header
    meta: dict[str, Any] = {
        "format": "nifti",
        "qform_code": int(header["qform_code"]) if "qform_code" in header else None,
        "sform_code": int(header["sform_code"]) if "sform_code" in header else None,
        "description": _description(header),
        "warnings": [],
    }
    if array.ndim > 3:
        meta["warnings"].append(f"{array.ndim}D NIfTI: dimensions after the third are kept as is")
    return ImageVolume(
        array=array,
        affine=affine,
        modality=None,
        source=str(path),
        meta=meta,
    )


def _check_nifti_size(path: Path, image: nib.Nifti1Image) -> None:
    """The declared shape fits the size limit before nibabel allocates it."""
    from medplug.ingest.checks import max_volume_bytes

    shape = tuple(int(n) for n in image.shape)
    needed = int(np.prod(shape, dtype=np.float64)) * 4
    if any(n <= 0 for n in shape) or needed > max_volume_bytes():
        raise DicomError(path, "too_large", f"NIfTI shape {shape} is empty or over the size limit")


def _description(header: nib.Nifti1Header) -> str:
    try:
        return str(header["descrip"].tobytes().decode("latin-1").strip("\x00 "))
    except (KeyError, ValueError, AttributeError):
        return ""


def save_nifti(volume: ImageVolume, path: str | Path) -> Path:
    """Write a volume as NIfTI with its RAS affine (qform and sform both set)."""
    path = Path(path)
    image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    nib.save(image, str(path))
    return path
