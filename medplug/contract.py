"""The predict contract every medplug plugin shares. Read this file first.

A ``Case`` goes in (image volumes, report text, clinical fields; any may be
missing), a ``Prediction`` comes out. A plugin describes itself with a
``PluginInfo`` shaped like MONAI Bundle metadata (``network_data_format``), so
a MONAI user recognises the fields, and answers ``predict``.

Geometry convention: ``ImageVolume.array`` is indexed (i, j[, k]) the way
nibabel and MONAI index spatial data, and ``affine`` maps (i, j, k, 1) to
RAS world millimetres, exactly what MONAI ``LoadImage`` puts in a
MetaTensor's ``affine``.
"""

from __future__ import annotations

import base64
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from medplug.errors import InputError, MedplugError, MissingInputError, PluginError

ClinicalValue = float | int | str | None


# --------------------------------------------------------------------------- inputs


@dataclass
class ImageVolume:
    """One image (2D or 3D) with its geometry and where it came from."""

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uids: list[str] = field(default_factory=list)
    source: str | None = None  # file or folder it was read from
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return int(self.array.ndim)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis, read off the affine."""
        columns = self.affine[:3, : self.ndim]
        return tuple(float(np.linalg.norm(columns[:, axis])) for axis in range(self.ndim))


@dataclass
class Case:
    """Everything known about one patient study; every part is optional."""

    case_id: str
    images: list[ImageVolume] = field(default_factory=list)
    report: str | None = None
    clinical: dict[str, ClinicalValue] = field(default_factory=dict)
    # Embeddings already computed for this case, by ``Plugin.embedding_key``: a pipeline
    # that ran the image and report plugins lets fusion reuse them instead of rerunning.
    # They describe the inputs as they were: clear them after changing images or report.
    embeddings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def image(self) -> ImageVolume | None:
        """The first (selected) image, the one image plugins use."""
        return self.images[0] if self.images else None

    def has(self, kind: str) -> bool:
        """Whether this case carries a usable input of ``kind``."""
        if kind == "image":
            return bool(self.images)
        if kind == "text":
            return bool(self.report and self.report.strip())
        if kind == "tabular":
            return any(value is not None for value in self.clinical.values())
        raise ValueError(f"unknown input kind {kind!r}")


# --------------------------------------------------------------------------- description


InputKind = Literal["image", "text", "tabular", "embedding"]


@dataclass
class InputSpec:
    """What a plugin expects of one input (MONAI bundle ``inputs`` entry)."""

    kind: InputKind
    required: bool = True
    modality: str | None = None
    spatial_dims: int | None = None
    spatial_size: list[int] | None = None
    spacing: list[float] | None = None
    intensity_window: list[float] | None = None
    num_channels: int | None = None
    fields: list[str] | None = None  # tabular: expected clinical field names
    description: str = ""


@dataclass
class PluginInfo:
    """Self-description of a plugin, stored with its model and shown by ``medplug plugins``."""

    name: str
    version: str
    task: str
    labels: list[str] = field(default_factory=list)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    description: str = ""
    license: str = "unspecified"
    intended_use: str = "Research use only. Not a medical device."
    metrics: dict[str, Any] = field(default_factory=dict)
    authors: str = ""

    @property
    def required_inputs(self) -> list[str]:
        return [name for name, spec in self.inputs.items() if spec.required]

    @property
    def optional_inputs(self) -> list[str]:
        return [name for name, spec in self.inputs.items() if not spec.required]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PluginInfo:
        data = dict(data)
        data["inputs"] = {k: InputSpec(**v) for k, v in data.get("inputs", {}).items()}
        return cls(**data)

    def to_bundle_metadata(self) -> dict[str, Any]:
        """The same facts laid out as a MONAI Bundle ``metadata.json``."""
        inputs = {
            name: {
                "type": spec.kind,
                "modality": spec.modality,
                "num_channels": spec.num_channels,
                "spatial_shape": spec.spatial_size,
                "dtype": "float32",
                "value_range": spec.intensity_window,
                "is_patch_data": False,
                "required": spec.required,
            }
            for name, spec in self.inputs.items()
        }
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "description": self.description,
            "authors": self.authors,
            "license": self.license,
            "intended_use": self.intended_use,
            "network_data_format": {
                "inputs": inputs,
                "outputs": {
                    "pred": {
                        "type": "probabilities",
                        "num_channels": len(self.labels),
                        "channel_def": dict(enumerate(self.labels)),
                    }
                },
            },
            "metrics": self.metrics,
        }


# --------------------------------------------------------------------------- outputs


@dataclass
class Explanation:
    """Why a plugin answered as it did; each part is filled by plugins that can."""

    heatmap: np.ndarray | None = None  # same shape as the input image
    heatmap_affine: np.ndarray | None = None
    token_attributions: list[tuple[str, float]] | None = None
    feature_attributions: dict[str, float] | None = None
    modality_contributions: dict[str, float] | None = None


@dataclass(frozen=True)
class CodedConcept:
    """A coded term (DICOM ``Code Value``, ``Coding Scheme Designator``, ``Code Meaning``)."""

    value: str
    scheme: str
    meaning: str


# SNOMED CT terms most segmentation plugins need; plugins may pass any other coded term.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = CodedConcept(
    "49755003", "SCT", "Morphologically Abnormal Structure"
)
LESION = CodedConcept("52988006", "SCT", "Lesion")
TISSUE = CodedConcept("85756007", "SCT", "Tissue")
ORGAN = CodedConcept("113343008", "SCT", "Organ")


@dataclass
class Segment:
    """One labelled region of a ``Segmentation``: its value in the label map and what it is."""

    value: int  # the label map's value for this segment (1, 2, ...; 0 is background)
    label: str  # short name shown in viewers, e.g. "lesion"
    category: CodedConcept = MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    type: CodedConcept = LESION


@dataclass
class Segmentation:
    """A plugin's mask output: an integer label map on the input image's own grid.

    ``label_map`` has exactly the input ``ImageVolume.array`` shape (i, j[, k]) and
    the same affine, so writers (DICOM SEG, NIfTI, viewers) place it on the source
    slices without resampling. ``check_geometry`` enforces this before anything is
    written, so a plugin bug becomes an error record, never a misplaced object.
    """

    label_map: np.ndarray
    segments: list[Segment] = field(default_factory=list)
    affine: np.ndarray | None = None  # None: the input image's affine

    def check_geometry(self, image: ImageVolume, *, tolerance_mm: float = 1e-3) -> None:
        """Raise ``PluginError`` unless the mask sits exactly on ``image``'s voxels."""
        if tuple(self.label_map.shape) != tuple(image.array.shape):
            raise PluginError(
                f"segmentation has shape {tuple(self.label_map.shape)} but the input image "
                f"has shape {tuple(image.array.shape)}"
            )
        if not np.issubdtype(self.label_map.dtype, np.integer) and self.label_map.dtype != bool:
            raise PluginError(f"segmentation label map must be integer, got {self.label_map.dtype}")
        if self.affine is not None and not np.allclose(
            np.asarray(self.affine, dtype=float), image.affine, atol=tolerance_mm
        ):
            raise PluginError("segmentation affine differs from the input image's affine")
        declared = {segment.value for segment in self.segments}
        present = {int(v) for v in np.unique(self.label_map)} - {0}
        undeclared = sorted(present - declared)
        if undeclared:
            raise PluginError(f"segmentation uses label values {undeclared} with no Segment")

    def volume_ml(self, segment: Segment, spacing_mm: Sequence[float]) -> float:
        """The segment's volume in millilitres, from the voxel count and voxel spacing."""
        voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=float))) / 1000.0
        return float(np.count_nonzero(self.label_map == segment.value)) * voxel_ml


@dataclass
class Prediction:
    """One plugin's answer for one case. ``to_json`` keeps every field a viewer needs."""

    plugin: str
    plugin_version: str
    case_id: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    explanation: Explanation | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # e.g. survival risk
    elapsed_s: float = 0.0
    error: dict[str, str] | None = None  # set when this case could not be predicted
    segmentation: Segmentation | None = None  # plugins whose info.outputs has "segmentation"

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become ``{"dtype", "shape", "base64"}``."""
        encoded: dict[str, Any] = _encode(asdict(self))
        return encoded

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        decoded = _decode(dict(data))
        explanation = decoded.pop("explanation", None)
        if explanation is not None:
            if explanation.get("token_attributions") is not None:
                explanation["token_attributions"] = [
                    (str(tok), float(val)) for tok, val in explanation["token_attributions"]
                ]
            explanation = Explanation(**explanation)
        segmentation = decoded.pop("segmentation", None)
        if segmentation is not None:
            segmentation = Segmentation(
                label_map=segmentation["label_map"],
                affine=segmentation.get("affine"),
                segments=[_segment_from_dict(item) for item in segmentation.get("segments", [])],
            )
        return cls(**decoded, explanation=explanation, segmentation=segmentation)


def _segment_from_dict(data: Mapping[str, Any]) -> Segment:
    return Segment(
        value=int(data["value"]),
        label=str(data["label"]),
        category=CodedConcept(**data["category"]),
        type=CodedConcept(**data["type"]),
    )


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        contiguous = np.ascontiguousarray(value)
        return {
            "__ndarray__": True,
            "dtype": str(contiguous.dtype),
            "shape": list(contiguous.shape),
            "base64": base64.b64encode(contiguous.tobytes()).decode("ascii"),
        }
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("__ndarray__"):
            raw = base64.b64decode(value["base64"])
            return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).copy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# --------------------------------------------------------------------------- plugins


def embedding_key_for(plugin_name: str, model_identity: str | None) -> str | None:
    """Where ``Case.embeddings`` keeps what plugin ``plugin_name`` with that model computed."""
    return f"{plugin_name}:{model_identity}" if model_identity else None


class Plugin(ABC):
    """Base class of every plugin: a loaded model that answers ``predict``.

    Subclasses set ``name``, implement ``describe`` (what they are without a
    model), ``from_pretrained`` (load a model folder) and ``_predict``. The
    base class checks inputs against ``info`` and times each call, so every
    plugin fails the same clear way on input it cannot use.
    """

    name: ClassVar[str]
    info: PluginInfo
    # sha256 of the model folder's medplug.json (which holds the weights' hashes); set by
    # ``registry.load_plugin``. Two plugins with the same key compute the same embeddings.
    model_identity: str | None = None
    # The model folder it was loaded from (``registry.load_plugin``): how another process
    # (a Ray inference actor) loads the same plugin again.
    model_dir: Path | None = None

    @property
    def embedding_key(self) -> str | None:
        """Key of this model's embeddings in ``Case.embeddings`` (None: not shareable)."""
        return embedding_key_for(self.name, self.model_identity)

    def keep_embeddings(self, cases: Sequence[Case], predictions: Sequence[Prediction]) -> None:
        """Store each prediction's embedding on its case, for plugins run after this one."""
        key = self.embedding_key
        if key is None:
            return
        for case, prediction in zip(cases, predictions, strict=True):
            if prediction.embedding is not None and not prediction.failed:
                case.embeddings[key] = prediction.embedding

    @classmethod
    @abstractmethod
    def describe(cls) -> PluginInfo:
        """The plugin's info before any model is loaded (for ``medplug plugins``)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, model_dir: str | Path) -> Plugin:
        """Load a self-describing model folder written by this plugin."""

    @abstractmethod
    def _predict(self, case: Case) -> Prediction:
        """Predict one case that already passed ``check_case``."""

    def predict(self, case: Case) -> Prediction:
        self.check_case(case)
        started = time.perf_counter()
        prediction = self._predict(case)
        if prediction.segmentation is not None:
            image = case.image
            if image is None:
                raise PluginError("plugin returned a segmentation for a case without an image")
            prediction.segmentation.check_geometry(image)
        if not prediction.elapsed_s:
            prediction.elapsed_s = time.perf_counter() - started
        return prediction

    def predict_batch(self, cases: Sequence[Case]) -> list[Prediction]:
        """Predict many cases, one ``Prediction`` per case in order.

        A case the plugin cannot use comes back with ``error`` set (``failed``)
        instead of raising, so one bad case never sinks the others. Plugins
        that can batch on the model override this and keep that rule.
        """
        predictions = []
        for case in cases:
            try:
                predictions.append(self.predict(case))
            except MedplugError as exc:
                predictions.append(self.failed_prediction(case, exc))
        return predictions

    def failed_prediction(self, case: Case, error: MedplugError) -> Prediction:
        """The placeholder ``predict_batch`` returns for a case that raised ``error``."""
        info = getattr(self, "info", None) or self.describe()
        return Prediction(
            plugin=info.name,
            plugin_version=info.version,
            case_id=case.case_id,
            label=None,
            warnings=[str(error)],
            error={"type": type(error).__name__, "message": str(error)},
        )

    def embed(self, case: Case) -> np.ndarray:
        """A fixed-length vector for fusion; plugins that can, override this."""
        raise PluginError(f"plugin {self.name!r} does not provide embeddings")

    def embed_batch(self, cases: Sequence[Case]) -> list[np.ndarray]:
        return [self.embed(case) for case in cases]

    def evaluate(self, data: Path, out_dir: Path) -> dict[str, Any]:
        """Score this model on labelled ``data``; writes figures and plots into ``out_dir``.

        Plugins that can be evaluated override this and use ``medplug.evaluation``
        so every plugin reports the same figures.
        """
        raise PluginError(f"plugin {self.name!r} does not support evaluation")

    def check_case(self, case: Case) -> None:
        """Raise a clear ``InputError`` if the case lacks what ``info`` requires."""
        info = getattr(self, "info", None) or self.describe()
        present = [kind for kind in ("image", "text", "tabular") if case.has(kind)]
        for input_name, spec in info.inputs.items():
            if spec.kind == "embedding":
                continue
            if spec.required and not case.has(spec.kind):
                raise MissingInputError(
                    f"plugin {info.name!r} needs input {input_name!r} ({spec.kind})"
                    f" but the case has only {present or 'nothing'}",
                    case_id=case.case_id,
                )
            if spec.kind == "image" and case.has("image") and spec.spatial_dims:
                image = case.image
                assert image is not None
                # A single-slice 3D volume is a valid 2D image (a radiograph read as a series).
                ndim = image.array.ndim - int(image.array.ndim == 3 and image.array.shape[-1] == 1)
                if ndim != spec.spatial_dims:
                    raise InputError(
                        f"plugin {info.name!r} expects a {spec.spatial_dims}D image, "
                        f"got a {ndim}D array of shape {tuple(image.array.shape)}"
                        + (f" from {image.source}" if image.source else ""),
                        case_id=case.case_id,
                    )
            if spec.kind == "image" and case.has("image"):
                image = case.image
                assert image is not None
                if not np.isfinite(image.array).all():
                    raise InputError("image contains NaN or infinite values", case_id=case.case_id)
