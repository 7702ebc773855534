"""Knobs that decide how much label signal each modality of the cohort carries.

The defaults make an easy cohort where image, report and clinical fields all
agree with the label (good for a demo). A fusion benchmark wants each modality
to carry only part of the signal: lower ``lesion_contrast_hu`` or
``lesion_visible_prob`` for the image, ``report_agreement`` for the text and
``clinical_signal`` for the tabular fields.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from medplug.errors import DataError


@dataclass(frozen=True)
class CohortOptions:
    """How the synthetic cohort is drawn. All fields have safe defaults.

    Image:
        shape: voxels (columns, rows, slices) of each CT series.
        pixel_spacing_mm: in-plane voxel size (rows and columns).
        slice_spacing_mm: distance between slice centres (also SliceThickness).
        noise_hu: standard deviation of the Gaussian noise added everywhere.
        lesion_contrast_hu: lesion HU minus lung HU (-850). 890 gives a soft-tissue
            (+40 HU) nodule; 100 gives a faint ground-glass one.
        lesion_diameter_mm: (min, max) of the lesion's diameter, drawn uniformly.
        lesion_visible_prob: probability that a ``lesion`` case's lesion is drawn
            in the image at all (1.0: always; lower = occult lesions).
    Report:
        report_agreement: probability that the report's finding matches the label
            (1.0: always; 0.5: the report carries no signal).
    Clinical:
        clinical_signal: strength of the label's effect on age, smoking, sex and
            CRP (0: independent of the label; 1: moderate; 2: strong).
        missing_rate: probability that each clinical value is missing (empty).
    """

    shape: tuple[int, int, int] = (64, 64, 32)
    pixel_spacing_mm: float = 0.75
    slice_spacing_mm: float = 2.5
    noise_hu: float = 12.0
    lesion_contrast_hu: float = 890.0
    lesion_diameter_mm: tuple[float, float] = (5.0, 8.0)
    lesion_visible_prob: float = 1.0
    report_agreement: float = 1.0
    clinical_signal: float = 1.0
    missing_rate: float = 0.1

    def __post_init__(self) -> None:
        nx, ny, nz = self.shape
        if min(nx, ny) < 32 or nz < 8:
            raise DataError(f"shape {self.shape} too small: need at least 32x32x8 voxels")
        if self.pixel_spacing_mm <= 0 or self.slice_spacing_mm <= 0:
            raise DataError("pixel_spacing_mm and slice_spacing_mm must be positive")
        if self.noise_hu < 0:
            raise DataError("noise_hu must be >= 0")
        low, high = self.lesion_diameter_mm
        if not 0 < low <= high:
            raise DataError(f"lesion_diameter_mm {self.lesion_diameter_mm} must be 0 < min <= max")
        for name in ("lesion_visible_prob", "report_agreement", "missing_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"{name} must be between 0 and 1, got {value}")
        if self.clinical_signal < 0:
            raise DataError("clinical_signal must be >= 0")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CohortOptions:
        """Build from keyword arguments, naming any unknown option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise DataError(f"unknown sample-data option(s) {unknown}; known: {sorted(known)}")
        converted = {
            key: tuple(value) if isinstance(value, list) else value for key, value in kwargs.items()
        }
        return cls(**converted)

    def fingerprint(self) -> str:
        """Short stable hash, mixed into the UIDs so different cohorts never share UIDs."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
