"""Image and lesion-mask pairs from a sample cohort (``manifest.csv``, layout in DEVELOPING.md).

Images go through ``medplug.ingest`` (NIfTI by default, the DICOM series with
``image_column="dicom_dir"``), masks are the cohort's ``lesion_mask.nii.gz``.
Every problem (missing column or file, a mask off its image's grid) names the
case it came from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from medplug.contract import ImageVolume
from medplug.errors import DataError, MedplugError
from medplug.ingest import load_image

MANIFEST_NAME = "manifest.csv"
MASK_COLUMN = "lesion_mask"


@dataclass
class SegCase:
    """One labelled case: its image, its true mask on the image's grid, lesion or not."""

    case_id: str
    image: ImageVolume
    mask: np.ndarray  # bool, image.array's shape

    @property
    def has_lesion(self) -> bool:
        return bool(self.mask.any())


def manifest_path(data: Path) -> Path:
    """``data`` itself if it is a CSV, else the cohort folder's ``manifest.csv``."""
    data = Path(data)
    path = data if data.suffix.lower() == ".csv" else data / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{data}: no cohort manifest ({MANIFEST_NAME}) found")
    return path


def read_cohort(data: Path, image_column: str = "nifti") -> list[SegCase]:
    """Every case of the cohort at ``data`` (a folder or its manifest CSV)."""
    path = manifest_path(data)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"{path}: the manifest has no cases")
    missing = [c for c in ("case_id", image_column, MASK_COLUMN) if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {missing}")
    return [_read_case(path.parent, row, image_column) for row in rows]


def _read_case(root: Path, row: dict[str, str], image_column: str) -> SegCase:
    case_id = row["case_id"]
    if not row.get(image_column) or not row.get(MASK_COLUMN):
        raise DataError(f"case {case_id!r}: empty {image_column!r} or {MASK_COLUMN!r} cell")
    try:
        image = load_image(root / row[image_column])
        mask_volume = load_image(root / row[MASK_COLUMN])
    except MedplugError as exc:
        raise DataError(f"case {case_id!r}: {exc}") from exc
    if mask_volume.array.shape != image.array.shape or not np.allclose(
        mask_volume.affine, image.affine, atol=1e-3
    ):
        raise DataError(
            f"case {case_id!r}: {row[MASK_COLUMN]} is not on the grid of {row[image_column]} "
            f"(shapes {tuple(mask_volume.array.shape)} and {tuple(image.array.shape)})"
        )
    return SegCase(case_id=case_id, image=image, mask=np.asarray(mask_volume.array) > 0.5)


def split_cases(
    cases: list[SegCase], val_fraction: float, seed: int
) -> tuple[list[SegCase], list[SegCase]]:
    """Train and validation cases, stratified by lesion present or not (reproducible)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for present in (False, True):
        group = [case for case in cases if case.has_lesion == present]
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * val_fraction)) if len(group) > 1 else 0
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    if not train or not val:
        raise DataError(
            f"need cases for both training and validation, got {len(train)} and {len(val)} "
            f"from {len(cases)} cases"
        )
    if not any(case.has_lesion for case in train):
        raise DataError("no training case has a lesion in its mask; nothing to learn")
    return train, val
