"""MONAI Bundle folders built in the tests: MONAI's own layout and config syntax, trained here.

Layout (as MONAI documents it): ``configs/metadata.json``, ``configs/inference.json``,
``models/model.pt`` (a plain state dict, what ``CheckpointLoader`` reads). The
inference config is a complete one: ``python -m monai.bundle run`` runs it on a
folder of NIfTI files (``dataset_dir``) and saves into ``output_dir``, which is
how the tests compare MONAI's own run with medplug's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLASSIFIER_SIZE = [32, 32, 16]
WINDOW = {"a_min": -1000.0, "a_max": 400.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
SEG_PIXDIM = [1.5, 1.5, 2.5]

CLASSIFIER_NET: dict[str, Any] = {
    "_target_": "DenseNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "init_features": 8,
    "growth_rate": 8,
    "block_config": [2, 2],
    "bn_size": 2,
    "norm": "instance",
}
SEGMENTER_NET: dict[str, Any] = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
}


def _common(network_def: dict, preprocessing: list, postprocessing: list) -> dict[str, Any]:
    """The sections every inference.json of the Model Zoo has, in its syntax."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(@dataset_dir + '/*.nii.gz'))]",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {
            "_target_": "Dataset",
            "data": "@datalist",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "run": ["$@evaluator.run()"],
    }


def classifier_inference() -> dict[str, Any]:
    preprocessing = [
        # image_only false: SaveClassificationd names each CSV row from image_meta_dict
        {"_target_": "LoadImaged", "keys": "image", "image_only": False},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", **WINDOW},
        {"_target_": "Resized", "keys": "image", "spatial_size": CLASSIFIER_SIZE},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "SaveClassificationd",
            "keys": "pred",
            "meta_keys": "image_meta_dict",
            "saver": {
                "_target_": "CSVSaver",
                "output_dir": "@output_dir",
                "filename": "predictions.csv",
                "flush": True,
            },
        },
    ]
    return _common(CLASSIFIER_NET, preprocessing, postprocessing)


def segmenter_inference() -> dict[str, Any]:
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": SEG_PIXDIM, "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", **WINDOW},
        {"_target_": "DivisiblePadd", "keys": "image", "k": 4},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "$np.float32",
            "resample": False,
            "separate_folder": False,
        },
    ]
    config = _common(SEGMENTER_NET, preprocessing, postprocessing)
    config["imports"].append("$import numpy as np")
    return config


def metadata(task: str, labels: list[str], shape: list[Any], description: str) -> dict:
    """A ``metadata.json`` with the fields the MONAI Model Zoo's schema asks for."""
    segmentation = task == "segmentation"
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "trained in medplug's tests on the synthetic cohort"},
        "monai_version": "1.6.1",
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {},
        "name": f"medplug test {task}",
        "task": description,
        "description": description,
        "authors": "medplug tests",
        "copyright": "medplug tests",
        "license": "Apache-2.0",
        "data_source": "medplug.sampledata.generate_cohort",
        "data_type": "nifti",
        "image_classes": "single channel CT, HU",
        "label_classes": ", ".join(labels),
        "pred_classes": ", ".join(labels),
        "eval_metrics": {},
        "intended_use": "Testing only",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [-1000, 400],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image" if segmentation else "probabilities",
                    "format": "segmentation" if segmentation else "classes",
                    "num_channels": len(labels),
                    "spatial_shape": shape if segmentation else [1, len(labels)],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(i): name for i, name in enumerate(labels)},
                }
            },
        },
    }


def write_bundle(
    folder: Path, inference: dict, meta: dict, state: dict[str, torch.Tensor] | None
) -> Path:
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    if state is not None:
        torch.save(state, folder / "models" / "model.pt")
    return folder


def read_rows(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def train_classifier(cohort: Path, epochs: int = 60) -> dict[str, torch.Tensor]:
    """The bundle's network, trained on the cohort with its own preprocessing."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(classifier_inference())
    transform = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network_def")
    rows = read_rows(cohort)
    images = torch.stack([transform({"image": str(cohort / r["nifti"])})["image"] for r in rows])
    labels = torch.tensor([int(r["label"]) for r in rows])
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(images.as_tensor()), labels)
        loss.backward()
        optimiser.step()
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def train_segmenter(cohort: Path, epochs: int = 40) -> dict[str, torch.Tensor]:
    """A small UNet on the cohort's lesion masks (Dice + cross-entropy)."""
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        DivisiblePadd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"]
    transform = Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=SEG_PIXDIM, mode=("bilinear", "nearest")),
        ScaleIntensityRanged(keys="image", **WINDOW),
        DivisiblePadd(keys=keys, k=4),
    ])  # fmt: skip
    network = ConfigParser(segmenter_inference()).get_parsed_content("network_def")
    items = [
        transform({"image": str(cohort / r["nifti"]), "label": str(cohort / r["lesion_mask"])})
        for r in read_rows(cohort)
    ]
    images = torch.stack([item["image"].as_tensor() for item in items])
    masks = torch.stack([item["label"].as_tensor() for item in items]).round()
    torch.manual_seed(0)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for _ in range(epochs):
        for start in range(0, len(images), 4):
            optimiser.zero_grad()
            loss = loss_fn(network(images[start : start + 4]), masks[start : start + 4])
            loss.backward()
            optimiser.step()
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    predicted, truth = predicted > 0, truth > 0
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(predicted, truth).sum() / total)
