"""What an image model is: network, labels, preprocessing and training settings.

One JSON-serialisable dataclass, stored inside the model folder's
``medplug.json`` so inference rebuilds exactly the network and transform chain
that training used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medplug.errors import DataError
from medplug.strict_config import config_from_dict


@dataclass
class AugmentConfig:
    """Random MONAI augmentations applied to training images only."""

    flip_axes: list[int] = field(default_factory=list)  # spatial axes to flip at random
    rotate_deg: float = 0.0
    scale: float = 0.0  # +/- fraction
    translate: float = 0.0  # +/- fraction of the image size
    contrast_gamma: float = 0.0  # gamma drawn from [1 - g, 1 + g]
    noise_std: float = 0.0
    prob: float = 0.8  # probability of the affine part


@dataclass
class ImageModelConfig:
    """Everything needed to build, preprocess for, train and run an image model."""

    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])
    spatial_dims: int = 2
    in_channels: int = 1
    # Network: any class in monai.networks.nets, with its keyword arguments.
    network: str = "ResNet"
    network_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "block": "basic",
            "layers": [1, 1, 1, 1],
            "block_inplanes": [16, 32, 64, 128],
            "conv1_t_size": 3,
            "conv1_t_stride": 1,
            "no_max_pool": True,
        }
    )
    # Members trained from seeds seed + 1000 * i, stored and run as one SeedEnsemble.
    ensemble: int = 1
    gradcam_layer: str | None = None  # None: chosen from the network (see networks.py)
    # Preprocessing (see preprocessing.py).
    spatial_size: list[int] = field(default_factory=lambda: [64, 64])
    resize_mode: str = "resize"  # "resize" (interpolate) or "pad" (pad/crop, no interpolation)
    spacing: list[float] | None = None  # resample to this voxel size (mm) first, 3D only
    orientation: str | None = "RAS"  # 3D only
    intensity_window: list[float] | None = None  # [low, high] mapped to [0, 1] and clipped
    modality: str | None = None
    # Training.
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8  # early stopping on validation AUC
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs and their targets; 0 is off
    # Exponential moving average of the weights (and batch-norm statistics), per step,
    # with this decay; the average is what is validated, kept and saved. 0 is off.
    weight_ema: float = 0.0
    seed: int = 0
    val_fraction: float = 0.2  # manifests without a split column
    num_threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta_flips: list[int] = field(default_factory=list)  # test-time flips (spatial axes)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.spatial_dims not in (2, 3):
            raise DataError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.spatial_size) != self.spatial_dims:
            raise DataError(
                f"spatial_size {self.spatial_size} does not have {self.spatial_dims} entries"
            )
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise DataError(f"labels must be at least two distinct names, got {self.labels}")
        if self.ensemble < 1:
            raise DataError(f"ensemble must be at least 1 member, got {self.ensemble}")
        if not 0.0 <= self.weight_ema < 1.0:
            raise DataError(f"weight_ema must be in [0, 1), got {self.weight_ema}")
        if self.resize_mode not in ("resize", "pad"):
            raise DataError(f"resize_mode must be 'resize' or 'pad', got {self.resize_mode!r}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageModelConfig:
        return config_from_dict(cls, data, "image config fields")

    @classmethod
    def from_file(cls, path: str | Path) -> ImageModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read image config ({exc})") from exc
        return cls.from_dict(data)


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def resolve_config(name_or_path: str | Path) -> ImageModelConfig:
    """A config file, or the name of one shipped in ``medplug_image/configs``."""
    path = Path(name_or_path)
    if path.is_file():
        return ImageModelConfig.from_file(path)
    shipped = SHIPPED_CONFIGS / f"{name_or_path}.json"
    if shipped.is_file():
        return ImageModelConfig.from_file(shipped)
    names = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))
    raise DataError(f"no config file {path} and no shipped config of that name (shipped: {names})")
