"""A bundle's ``configs/inference.json`` parsed with ``monai.bundle.ConfigParser``.

medplug runs the bundle's own components: ``network_def``, ``preprocessing``,
``inferer`` and ``postprocessing``, exactly as ``python -m monai.bundle run``
would build them. Three things change, each because medplug owns that job:

- the ``LoadImage(d)`` step keeps its arguments but reads the volume medplug
  already ingested (``PreloadedVolumeReader``), not a file;
- ``SaveImage(d)`` / ``SaveClassification(d)`` steps are dropped: medplug
  writes its own outputs (JSON, DICOM SR/SEG, NIfTI);
- ``device`` is the CPU and ``bundle_root`` is the folder it was loaded from.

Everything else a config needs that medplug cannot honour (a second input
image, a class no installed library provides, a preprocessing that is not a
``Compose``) is refused with the file and the config id (``a#b#0``).
"""

from __future__ import annotations

import pydoc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigComponent, ConfigParser
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Compose, LoadImaged

from medplug.errors import ModelFileError
from medplug_bundle.monai_bundle.metadata import METADATA_PATH
from medplug_bundle.volume_reader import PreloadedVolumeReader

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
LOADERS = ("LoadImage", "LoadImaged")
SAVERS = ("SaveImage", "SaveImaged", "SaveClassification", "SaveClassificationd")
PARSED_SECTIONS = ("network_def", "preprocessing", "inferer", "postprocessing")


@dataclass
class BundleConfig:
    """The bundle's components, built and ready to run on medplug's volumes."""

    path: Path
    image_key: str
    preprocessing: Compose
    postprocessing: Compose | None
    inferer: Inferer
    network: torch.nn.Module | None  # None: the bundle ships only TorchScript
    reader: PreloadedVolumeReader
    network_spatial_dims: int | None
    dropped: list[str] = field(default_factory=list)  # config ids medplug left out


def find_config(bundle: Path) -> Path:
    for name in CONFIG_NAMES:
        path = bundle / "configs" / name
        if path.is_file():
            return path
    raise ModelFileError(
        f"{bundle / 'configs' / CONFIG_NAMES[0]}: missing; a MONAI bundle run by medplug "
        "needs configs/inference.json (or .yaml)"
    )


def load_config(bundle: Path) -> BundleConfig:
    """Parse the bundle's inference config into runnable components."""
    path = find_config(bundle)
    parser = ConfigParser()
    try:
        parser.read_meta(str(bundle / METADATA_PATH))
        parser.read_config(str(path))
    except Exception as exc:  # JSON/YAML syntax errors come in many types
        raise ModelFileError(f"{path}: not a readable bundle config ({_first_line(exc)})") from None
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    _check_compose(parser, path, "preprocessing", required=True)
    has_post = parser.get("postprocessing") is not None
    if has_post:
        _check_compose(parser, path, "postprocessing", required=False)
    dropped = _drop_savers(parser, "preprocessing") + (
        _drop_savers(parser, "postprocessing") if has_post else []
    )
    reader = PreloadedVolumeReader()
    loader_id = _use_reader(parser, path, reader)
    for section in PARSED_SECTIONS:
        _check_targets(parser, path, section)
    preprocessing = _parse(parser, path, "preprocessing")
    loader = preprocessing.transforms[int(loader_id.rsplit("#", 1)[1])]
    if not isinstance(loader, LoadImaged):
        raise ModelFileError(
            f"{path}: {loader_id} is LoadImage, not LoadImaged; medplug runs dictionary "
            "transforms like `monai.bundle run`'s evaluator"
        )
    if len(loader.keys) != 1:
        raise ModelFileError(
            f"{path}: {loader_id}#keys loads {list(loader.keys)}; medplug feeds one image"
        )
    network = _parse(parser, path, "network_def") if parser.get("network_def") else None
    return BundleConfig(
        path=path,
        image_key=str(loader.keys[0]),
        preprocessing=preprocessing,
        postprocessing=_parse(parser, path, "postprocessing") if has_post else None,
        inferer=_parse(parser, path, "inferer") if parser.get("inferer") else SimpleInferer(),
        network=network,
        reader=reader,
        network_spatial_dims=_spatial_dims(parser),
        dropped=dropped,
    )


def _check_compose(parser: ConfigParser, path: Path, section: str, required: bool) -> None:
    config = parser.get(section)
    if config is None and not required:
        return
    target = config.get("_target_") if isinstance(config, dict) else None
    if not isinstance(target, str) or target.rsplit(".", 1)[-1] != "Compose":
        raise ModelFileError(
            f"{path}: {section} must be a Compose of transforms "
            f"({{'_target_': 'Compose', 'transforms': [...]}}) for medplug to run it"
        )
    if not isinstance(config.get("transforms"), list):
        raise ModelFileError(f"{path}: {section}#transforms must be a list of transforms")


def _short_target(item: Any) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("_target_"), str):
        return item["_target_"].rsplit(".", 1)[-1]
    return None


def _drop_savers(parser: ConfigParser, section: str) -> list[str]:
    transforms = parser[f"{section}#transforms"]
    kept = [item for item in transforms if _short_target(item) not in SAVERS]
    dropped = [
        f"{section}#transforms#{index}"
        for index, item in enumerate(transforms)
        if _short_target(item) in SAVERS
    ]
    if dropped:
        parser[f"{section}#transforms"] = kept
    return dropped


def _use_reader(parser: ConfigParser, path: Path, reader: PreloadedVolumeReader) -> str:
    """Point the LoadImage step at medplug's volume; returns its config id."""
    transforms = parser["preprocessing#transforms"]
    loaders = [i for i, item in enumerate(transforms) if _short_target(item) in LOADERS]
    if len(loaders) != 1:
        raise ModelFileError(
            f"{path}: preprocessing#transforms has {len(loaders)} LoadImage(d) steps; "
            "medplug needs exactly one, which it feeds with the ingested image"
        )
    loader_id = f"preprocessing#transforms#{loaders[0]}"
    parser[f"{loader_id}#reader"] = reader
    return loader_id


def _components(config: Any, prefix: str) -> Iterator[tuple[str, dict]]:
    if isinstance(config, dict):
        if "_target_" in config:
            yield prefix, config
        for key, value in config.items():
            yield from _components(value, f"{prefix}#{key}")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from _components(value, f"{prefix}#{index}")


def _check_targets(parser: ConfigParser, path: Path, section: str) -> None:
    """Every ``_target_`` of ``section`` names a class or function that can be imported."""
    config = parser.get(section)
    for component_id, component in _components(config, section):
        target = component["_target_"]
        if not isinstance(target, str) or target.startswith(("$", "@")):
            continue
        item = ConfigComponent(config=component, id=component_id, locator=parser.locator)
        name = item.resolve_module_name()
        if not isinstance(name, str) or pydoc.locate(name) is None:
            raise ModelFileError(
                f"{path}: {component_id}#_target_ {target!r} is not a class or function "
                "MONAI or an installed package provides"
            )


def _parse(parser: ConfigParser, path: Path, section: str) -> Any:
    try:
        return parser.get_parsed_content(section)
    except ModelFileError:
        raise
    except Exception as exc:  # instantiating arbitrary components raises anything
        raise ModelFileError(f"{path}: {section} could not be built ({_first_line(exc)})") from None


def _spatial_dims(parser: ConfigParser) -> int | None:
    network = parser.get("network_def")
    value = network.get("spatial_dims") if isinstance(network, dict) else None
    return value if isinstance(value, int) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first[:200]}"
