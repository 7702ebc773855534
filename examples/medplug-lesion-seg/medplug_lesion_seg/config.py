"""What a lesion segmentation model is: network size, preprocessing and training settings.

One JSON-serialisable dataclass, stored in the model folder's ``medplug.json``
so prediction rebuilds exactly the network and transform chain training used.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medplug.errors import DataError
from medplug.strict_config import config_from_dict


@dataclass
class LesionSegConfig:
    """Everything needed to build, preprocess for, train and run the lesion UNet."""

    # Network: monai.networks.nets.UNet, one sigmoid output channel (lesion).
    channels: list[int] = field(default_factory=lambda: [8, 16, 32])
    strides: list[int] = field(default_factory=lambda: [2, 2])
    num_res_units: int = 1
    # Batch norm, not MONAI's default instance norm: training sees lesion-centred patches,
    # prediction the whole volume, and per-image statistics differ between the two.
    norm: str = "batch"
    # Preprocessing (see transforms.py). ``spacing`` None: the training cases' median
    # voxel size, fixed in the saved model so new scans are resampled to what it saw.
    spacing: list[float] | None = None
    orientation: str = "RAS"
    intensity_window: list[float] = field(default_factory=lambda: [-1000.0, 400.0])
    modality: str = "CT"
    # Voxels with P(lesion) >= threshold form the mask; the case's P(lesion) is the
    # highest voxel probability, so a case is "lesion" exactly when its mask is not empty.
    threshold: float = 0.5
    single_lesion: bool = True  # keep only the region around the most probable voxel
    # Training, on patches: a patch is centred on a lesion voxel with probability
    # ``lesion_patch_fraction`` (in cases with a lesion), elsewhere at random. Whole
    # volumes cost ~8x more per step and drown the ~100 lesion voxels in background.
    patch_size: list[int] = field(default_factory=lambda: [24, 24, 8])
    patches_per_case: int = 6
    lesion_patch_fraction: float = 0.5
    # Of the other patches, this fraction is centred on a voxel as dense as the lesions
    # (chest wall, spine): where whole-volume masks otherwise put false positives.
    hard_negative_fraction: float = 0.5
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-2  # Adam, cosine decay to 0 over all steps, no warm-up
    weight_decay: float = 0.0
    flip_prob: float = 0.5  # random flip along each spatial axis, training only
    val_fraction: float = 0.2
    patience: int = 8  # early stopping on validation Dice
    seed: int = 0
    # One thread: this network's small convolutions gain little from a second one, and on
    # a shared 2-core box (load ~13) 2 threads made epochs several times slower.
    num_threads: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise DataError(
                f"UNet needs at least 2 channels and one stride fewer: channels "
                f"{self.channels}, strides {self.strides}"
            )
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise DataError(f"spacing must be 3 positive voxel sizes in mm, got {self.spacing}")
        low, high = self.intensity_window
        if not low < high:
            raise DataError(f"intensity_window must be [low, high], got {self.intensity_window}")
        if not 0.0 < self.threshold < 1.0:
            raise DataError(f"threshold must be between 0 and 1, got {self.threshold}")
        if len(self.patch_size) != 3 or any(n % self.divisor for n in self.patch_size):
            raise DataError(
                f"patch_size {self.patch_size} must be 3 sizes, each a multiple of "
                f"{self.divisor} (the product of the strides)"
            )
        if not 0.0 <= self.lesion_patch_fraction <= 1.0:
            raise DataError(
                f"lesion_patch_fraction must be between 0 and 1, got {self.lesion_patch_fraction}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if min(self.epochs, self.batch_size, self.num_threads, self.patches_per_case) < 1:
            raise DataError("epochs, batch_size, num_threads and patches_per_case must be >= 1")

    @property
    def divisor(self) -> int:
        """Each spatial size is padded to a multiple of this so the UNet's skips line up."""
        return math.prod(self.strides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LesionSegConfig:
        return config_from_dict(cls, data, "lesion-seg config fields")

    @classmethod
    def from_file(cls, path: str | Path) -> LesionSegConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read lesion-seg config ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError(f"{path}: a lesion-seg config must be a JSON object")
        return cls.from_dict(data)
