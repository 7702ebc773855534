"""Everything that decides how a fusion model is built and trained, in one JSON-able place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medplug.errors import DataError
from medplug.strict_config import config_from_dict

Task = Literal["classification", "survival"]


@dataclass
class SourceConfig:
    """An embedding source: a registered plugin name and the model folder it loads."""

    plugin: str
    model_dir: str | None = None


@dataclass
class FusionConfig:
    """Training options for ``medplug train fusion`` (``--config`` takes this as JSON).

    ``image`` / ``report`` name the plugins whose ``embed`` feeds the model; leave one
    out to fuse fewer modalities. ``clinical_fields`` maps a field to ``numeric`` or
    ``categorical``; left empty, every non-reserved manifest column is used and its
    kind inferred.
    """

    task: Task = "classification"
    image: SourceConfig | None = None
    report: SourceConfig | None = None
    clinical_fields: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    projection_dim: int = 32
    hidden_dim: int = 64
    depth: int = 2
    dropout: float = 0.2
    modality_dropout: float = 0.25
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 20
    validation_fraction: float = 0.2
    ensemble: int = 1
    seed: int = 0
    survival_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "survival"):
            raise DataError(f"task must be 'classification' or 'survival', got {self.task!r}")
        for name in ("image", "report"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, SourceConfig(**value))
        for name, kind in self.clinical_fields.items():
            if kind not in ("numeric", "categorical"):
                raise DataError(f"clinical field {name!r}: kind must be numeric or categorical")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise DataError("modality_dropout must be in [0, 1)")
        if not 0.0 < self.validation_fraction < 0.5:
            raise DataError("validation_fraction must be in (0, 0.5)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        return config_from_dict(cls, data, "fusion config key(s)")

    @classmethod
    def from_preset_or_file(cls, name_or_path: str | Path) -> FusionConfig:
        """A preset name (``demo``, ``classification``, ``survival``) or a JSON file."""
        if str(name_or_path) in PRESETS:
            return cls.from_dict(PRESETS[str(name_or_path)])
        path = Path(name_or_path)
        if not path.is_file():
            raise DataError(
                f"--config {name_or_path!r} is neither a preset {sorted(PRESETS)} nor a file"
            )
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | Path) -> FusionConfig:
        import json

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON config ({exc})") from exc


BUILT_IN_SOURCES: dict[str, Any] = {
    "image": {"plugin": "image-classifier"},
    "report": {"plugin": "report-classifier"},
}

# Model folders of the embedding plugins default to ``$MEDPLUG_MODELS/<plugin>``.
PRESETS: dict[str, dict[str, Any]] = {
    "classification": {"task": "classification", **BUILT_IN_SOURCES},
    "demo": {
        "task": "classification",
        **BUILT_IN_SOURCES,
        "projection_dim": 16,
        "hidden_dim": 32,
        "batch_size": 16,
        "patience": 30,
        "ensemble": 3,
    },
    "survival": {
        "task": "survival",
        "batch_size": 256,
        "weight_decay": 1e-3,
        "ensemble": 5,
    },
}
