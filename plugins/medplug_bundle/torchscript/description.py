"""``torchscript.json``: labels, dimensions and preprocessing by name, next to ``model.ts``.

```json
{"name": "lesion-net", "version": "1.2.0", "task": "classification",
 "labels": ["no_lesion", "lesion"], "spatial_dims": 3, "modality": "CT",
 "preprocessing": [
   {"name": "orientation", "axcodes": "RAS"},
   {"name": "window", "min": -1000, "max": 400},
   {"name": "resize", "spatial_size": [32, 32, 16]}]}
```
Each preprocessing name is one MONAI dictionary transform on the image (the
table ``STEPS``), with its arguments as given; an unknown name or argument is
refused naming the file and the entry. No code, no expressions: unlike a
bundle's config, this file cannot run anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai import transforms as mt

from medplug.errors import ModelFileError
from medplug_bundle.json_file import read_json_object

IMAGE = "image"

STEPS: dict[str, Any] = {
    "orientation": lambda a: mt.Orientationd(keys=IMAGE, axcodes=a.get("axcodes", "RAS")),
    "spacing": lambda a: mt.Spacingd(keys=IMAGE, pixdim=a["pixdim"], mode="bilinear"),
    "window": lambda a: mt.ScaleIntensityRanged(
        keys=IMAGE, a_min=a["min"], a_max=a["max"], b_min=0.0, b_max=1.0, clip=True
    ),
    "scale_intensity": lambda a: mt.ScaleIntensityd(keys=IMAGE, minv=0.0, maxv=1.0),
    "normalize_intensity": lambda a: mt.NormalizeIntensityd(
        keys=IMAGE, nonzero=a.get("nonzero", False)
    ),
    "resize": lambda a: mt.Resized(keys=IMAGE, spatial_size=a["spatial_size"]),
    "pad_divisible": lambda a: mt.DivisiblePadd(keys=IMAGE, k=a["k"]),
    "repeat_channels": lambda a: mt.RepeatChanneld(keys=IMAGE, repeats=a["repeats"]),
}
ARGUMENTS = {
    "orientation": {"axcodes"},
    "spacing": {"pixdim"},
    "window": {"min", "max"},
    "scale_intensity": set(),
    "normalize_intensity": {"nonzero"},
    "resize": {"spatial_size"},
    "pad_divisible": {"k"},
    "repeat_channels": {"repeats"},
}


def read_description(path: Path) -> dict[str, Any]:
    data = read_json_object(path, f"a TorchScript model folder needs {path.name}")
    if data.get("task", "classification") not in ("classification", "segmentation"):
        raise ModelFileError(f"{path}: task must be classification or segmentation")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelFileError(f"{path}: labels must be a non-empty list of class names")
    if data.get("spatial_dims") not in (2, 3):
        raise ModelFileError(f"{path}: spatial_dims must be 2 or 3")
    return data


def build_steps(path: Path, entries: Any) -> list[Any]:
    """The MONAI transforms named by ``preprocessing``."""
    if not isinstance(entries, list):
        raise ModelFileError(f"{path}: preprocessing must be a list of {{'name': ...}} steps")
    steps = []
    for index, entry in enumerate(entries):
        where = f"{path}: preprocessing[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in STEPS:
            raise ModelFileError(f"{where}.name {name!r} is not one of {sorted(STEPS)}")
        arguments = {k: v for k, v in entry.items() if k != "name"}
        unknown = sorted(set(arguments) - ARGUMENTS[name])
        missing = sorted(ARGUMENTS[name] - set(arguments) - {"axcodes", "nonzero"})
        if unknown or missing:
            raise ModelFileError(
                f"{where} ({name}): unknown {unknown} / missing {missing} arguments; "
                f"it takes {sorted(ARGUMENTS[name])}"
            )
        steps.append(STEPS[name](arguments))
    return steps
