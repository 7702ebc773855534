"""``torchscript``: a ``model.ts`` exported from any training code, plus ``torchscript.json``.

The folder is run like a MONAI bundle (``monai_bundle.plugin``) whose
preprocessing is ``LoadImaged`` (fed medplug's ingested volume),
``EnsureChannelFirstd`` and the named steps of ``torchscript.json``, with no
postprocessing: classification gives a softmax (a sigmoid for one label),
segmentation an argmax label map inverted onto the input grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from monai.inferers import SimpleInferer
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged

from medplug.contract import PluginInfo
from medplug.errors import ModelFileError
from medplug.registry import DECLARATION_NAME, read_declaration
from medplug_bundle.identity import folder_identity
from medplug_bundle.monai_bundle.config import BundleConfig
from medplug_bundle.monai_bundle.metadata import BundleMetadata
from medplug_bundle.monai_bundle.plugin import MonaiBundlePlugin
from medplug_bundle.torchscript import DESCRIPTION_NAME, MODEL_NAME, PLUGIN_NAME
from medplug_bundle.torchscript.description import IMAGE, build_steps, read_description
from medplug_bundle.trust import refuse_if_signatures_required
from medplug_bundle.volume_reader import PreloadedVolumeReader
from medplug_bundle.weights import load_torchscript


class TorchScriptPlugin(MonaiBundlePlugin):
    """A TorchScript model described by a small JSON file."""

    name: ClassVar[str] = PLUGIN_NAME

    @classmethod
    def describe(cls) -> PluginInfo:
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> TorchScriptPlugin:
        folder = Path(model_dir)
        refuse_if_signatures_required(folder, "TorchScript folders carry no medplug signature")
        path = folder / DESCRIPTION_NAME
        data = read_description(path)
        reader = PreloadedVolumeReader()
        steps = [LoadImaged(keys=IMAGE, reader=reader, image_only=True),
                 EnsureChannelFirstd(keys=IMAGE),
                 *build_steps(path, data.get("preprocessing", [])),
                 EnsureTyped(keys=IMAGE)]  # fmt: skip
        labels = list(data["labels"])
        segmentation = data.get("task") == "segmentation"
        metadata = BundleMetadata(
            path=path,
            raw={
                "name": data.get("name") or folder.name,
                "version": str(data.get("version", "0")),
                "description": data.get("description", "TorchScript model"),
                "license": data.get("license"),
                "intended_use": data.get("intended_use"),
                "authors": data.get("authors"),
                "network_data_format": {"inputs": {IMAGE: {"modality": data.get("modality")}}},
            },
            input_key=IMAGE,
            output_key="pred",
            task="segmentation" if segmentation else "classification",
            labels=labels,
            num_channels=len(labels),
            in_channels=int(data.get("in_channels", 1)),
            spatial_dims=int(data["spatial_dims"]),
            spatial_shape=None,
            channels_key="labels (one per network output channel)",
        )
        config = BundleConfig(
            path=path,
            image_key=IMAGE,
            preprocessing=Compose(steps),
            postprocessing=None,
            inferer=SimpleInferer(),
            network=None,
            reader=reader,
            network_spatial_dims=int(data["spatial_dims"]),
        )
        model = folder / MODEL_NAME
        if not model.is_file():
            raise ModelFileError(f"{model}: missing; the TorchScript file must be {MODEL_NAME}")
        network = load_torchscript(model)
        identity, manifest = folder_identity(folder)
        return cls(
            folder, metadata, config, network, model, metadata.spatial_dims or 3, identity,
            manifest,
        )  # fmt: skip
