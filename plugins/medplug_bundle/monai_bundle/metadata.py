"""``configs/metadata.json`` of a MONAI Bundle, read into what medplug needs to know.

MONAI documents the file (``network_data_format`` with ``inputs`` and
``outputs``, each with ``type``, ``format``, ``num_channels``,
``spatial_shape``, ``channel_def``); medplug's ``PluginInfo`` is shaped after
it, so the mapping is direct. Anything medplug cannot use is refused here,
naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medplug.contract import InputSpec, PluginInfo
from medplug.errors import ModelFileError
from medplug_bundle.json_file import read_json_object

METADATA_PATH = Path("configs") / "metadata.json"
SEGMENTATION_FORMATS = ("segmentation", "labels", "label")
CLASSIFICATION_TYPES = ("probabilities", "probability", "classes", "class", "logits")

Task = Literal["classification", "segmentation"]


@dataclass
class BundleMetadata:
    """The facts of one bundle's ``metadata.json`` that decide how medplug runs it."""

    path: Path
    raw: dict[str, Any]
    input_key: str
    output_key: str
    task: Task
    labels: list[str]
    num_channels: int  # of the network output
    in_channels: int
    spatial_dims: int | None  # None: read from the network definition
    spatial_shape: list[Any] | None
    # where the output channel count is declared, for error messages
    channels_key: str = "network_data_format.outputs.pred.num_channels"

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or self.path.parent.parent.name)

    @property
    def version(self) -> str:
        return str(self.raw.get("version") or "0")

    def plugin_info(self, plugin_name: str, spatial_dims: int) -> PluginInfo:
        """The bundle's ``PluginInfo``; the plugin keeps its own name, the bundle's version."""
        raw = self.raw
        inputs = raw["network_data_format"]["inputs"][self.input_key]
        window = inputs.get("value_range")
        outputs = {"label": "the most probable class", "probabilities": "class probabilities"}
        if self.task == "segmentation":
            outputs = {"segmentation": "label map on the input image's grid (DICOM SEG)"}
        return PluginInfo(
            name=plugin_name,
            version=self.version,
            task=self.task,
            labels=list(self.labels),
            inputs={
                "image": InputSpec(
                    kind="image",
                    modality=inputs.get("modality") or raw.get("modality"),
                    spatial_dims=spatial_dims,
                    spatial_size=_int_list(self.spatial_shape),
                    intensity_window=window if _numbers(window, 2) else None,
                    num_channels=self.in_channels,
                    description=f"bundle input {self.input_key!r}: "
                    f"{inputs.get('format', inputs.get('type', 'image'))}",
                )
            },
            outputs=outputs,
            description=f"MONAI bundle {self.name}: {raw.get('description', '')}".strip(),
            license=str(raw.get("license") or raw.get("copyright") or "unspecified"),
            intended_use=str(raw.get("intended_use") or PluginInfo.intended_use),
            metrics=dict(raw.get("eval_metrics") or {}),
            authors=str(raw.get("authors") or ""),
        )


def read_metadata(bundle: Path) -> BundleMetadata:
    """Read and check ``configs/metadata.json`` of ``bundle``."""
    path = bundle / METADATA_PATH
    raw = read_json_object(path, "a MONAI bundle needs configs/metadata.json")
    data_format = _section(raw, "network_data_format", path)
    inputs = _section(data_format, "inputs", path, "network_data_format.")
    outputs = _section(data_format, "outputs", path, "network_data_format.")
    if len(inputs) != 1:
        raise ModelFileError(
            f"{path}: network_data_format.inputs has {len(inputs)} inputs "
            f"({', '.join(inputs) or 'none'}); medplug feeds one image"
        )
    input_key, input_spec = next(iter(inputs.items()))
    output_key = "pred" if "pred" in outputs else next(iter(outputs), None)
    if output_key is None:
        raise ModelFileError(f"{path}: network_data_format.outputs is empty")
    where = f"network_data_format.outputs.{output_key}"
    output_spec = outputs[output_key]
    if not isinstance(input_spec, dict) or not isinstance(output_spec, dict):
        raise ModelFileError(f"{path}: network_data_format entries must be objects")
    if str(input_spec.get("type", "image")) != "image":
        raise ModelFileError(
            f"{path}: network_data_format.inputs.{input_key}.type is "
            f"{input_spec.get('type')!r}; medplug feeds images"
        )
    task = _task(output_spec, path, where)
    channels = output_spec.get("num_channels")
    if not isinstance(channels, int) or channels < 1:
        raise ModelFileError(f"{path}: {where}.num_channels must be a positive integer")
    labels = _labels(output_spec.get("channel_def"), channels, path, where)
    shape = input_spec.get("spatial_shape")
    return BundleMetadata(
        path=path,
        raw=raw,
        input_key=input_key,
        output_key=output_key,
        task=task,
        labels=labels,
        num_channels=channels,
        in_channels=int(input_spec.get("num_channels") or 1),
        spatial_dims=len(shape) if isinstance(shape, list) and shape else None,
        spatial_shape=shape if isinstance(shape, list) else None,
    )


def _section(data: dict, key: str, path: Path, prefix: str = "") -> dict:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        raise ModelFileError(f"{path}: {prefix}{key} is missing or empty")
    return value


def _task(spec: dict, path: Path, where: str) -> Task:
    kind, form = str(spec.get("type", "")).lower(), str(spec.get("format", "")).lower()
    if form in SEGMENTATION_FORMATS or (kind == "image" and form not in CLASSIFICATION_TYPES):
        return "segmentation"
    if kind in CLASSIFICATION_TYPES or form in CLASSIFICATION_TYPES:
        return "classification"
    raise ModelFileError(
        f"{path}: {where}.type {spec.get('type')!r} / format {spec.get('format')!r} is neither "
        "a segmentation (type image, format segmentation) nor a classification "
        "(type probabilities) output"
    )


def _labels(channel_def: Any, channels: int, path: Path, where: str) -> list[str]:
    if channel_def is None:
        return [f"class{i}" for i in range(channels)]
    if not isinstance(channel_def, dict):
        raise ModelFileError(f"{path}: {where}.channel_def must map channel numbers to names")
    try:
        named = {int(key): str(value) for key, value in channel_def.items()}
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: {where}.channel_def keys must be channel numbers") from None
    if sorted(named) != list(range(channels)):
        raise ModelFileError(
            f"{path}: {where}.channel_def names channels {sorted(named)} but num_channels "
            f"is {channels}"
        )
    return [named[i] for i in range(channels)]


def _int_list(values: list[Any] | None) -> list[int] | None:
    if values and all(isinstance(v, int) for v in values):
        return [int(v) for v in values]
    return None


def _numbers(values: Any, count: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == count
        and all(isinstance(v, int | float) for v in values)
    )
