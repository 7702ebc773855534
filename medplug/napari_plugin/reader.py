"""napari reader: DICOM folders, DICOM files and NIfTI through ``medplug.ingest``.

The layer keeps the ``ImageVolume`` in ``metadata["medplug_volume"]`` so the dock
widget predicts on exactly what ingest read (HU values, geometry, UIDs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medplug.contract import ImageVolume
from medplug.napari_plugin.geometry import to_layer

LayerData = tuple[np.ndarray, dict[str, Any], str]
VOLUME_KEY = "medplug_volume"


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _accepts(path: Path) -> bool:
    name = path.name.lower()
    if path.is_dir():
        return any(child.is_file() and _is_dicom_file(child) for child in _first_files(path))
    return name.endswith((".nii", ".nii.gz")) or (path.is_file() and _is_dicom_file(path))


def _first_files(folder: Path, limit: int = 50) -> list[Path]:
    """A few files of a folder tree, enough to tell if it holds DICOM."""
    found = []
    for child in sorted(folder.rglob("*")):
        if child.is_file():
            found.append(child)
            if len(found) >= limit:
                break
    return found


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader hook: a reading function if medplug can open ``path``, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if len(paths) != 1 or not _accepts(Path(paths[0])):
        return None
    return read


def read(path: str | list[str]) -> list[LayerData]:
    from medplug.ingest import load_image

    target = Path(path if isinstance(path, str) else path[0])
    volume = load_image(target)
    return [volume_layer(volume, name=_layer_name(target))]


def volume_layer(volume: ImageVolume, name: str) -> LayerData:
    """Layer data for one volume, with napari scale/affine from its geometry."""
    geometry = to_layer(volume.array, volume.affine)
    low, high = np.percentile(volume.array, [0.5, 99.5]) if volume.array.size else (0.0, 1.0)
    meta = {
        "name": name,
        "scale": geometry.scale,
        "affine": geometry.affine,
        "colormap": "gray",
        "contrast_limits": (float(low), float(max(high, low + 1e-3))),
        "metadata": {VOLUME_KEY: volume},
    }
    return geometry.data, meta, "image"


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
