"""From a labelled cohort to a self-describing model folder: read, preprocess, train, save."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from medplug.errors import DataError
from medplug.model_folder import save_model_folder
from monai.data import MetaTensor
from monai.transforms import SpatialPad
from nibabel.orientations import io_orientation

from medplug_lesion_seg import PLUGIN_NAME, PLUGIN_VERSION
from medplug_lesion_seg.cohort import SegCase, read_cohort, split_cases
from medplug_lesion_seg.config import LesionSegConfig
from medplug_lesion_seg.loop import LoopResult, train_network
from medplug_lesion_seg.plugin import LesionSegPlugin
from medplug_lesion_seg.transforms import apply_chain, build_chain


def oriented_spacing(affine: np.ndarray) -> list[float]:
    """Voxel size along world x, y, z (the RAS-oriented array's axes), from an affine."""
    columns = np.asarray(affine, dtype=float)[:3, :3]
    sizes = np.linalg.norm(columns, axis=0)
    world_axis = io_orientation(np.asarray(affine, dtype=float))[:, 0].astype(int)
    spacing = [0.0, 0.0, 0.0]
    for array_axis, axis in enumerate(world_axis):
        spacing[axis] = float(sizes[array_axis])
    return spacing


def median_spacing(cases: list[SegCase]) -> list[float]:
    """The training cases' median voxel size (mm): the grid the network will work on."""
    spacings = np.array([oriented_spacing(case.image.affine) for case in cases])
    return [round(float(value), 4) for value in np.median(spacings, axis=0)]


def to_tensors(cases: list[SegCase], config: LesionSegConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess every image and mask once; (N, 1, X, Y, Z) each, padded to one size."""
    image_chain, mask_chain = build_chain(config), build_chain(config, mask=True)
    images, masks = [], []
    for case in cases:
        images.append(apply_chain(case.image, image_chain, case.case_id).as_tensor())
        mask_volume = replace(case.image, array=case.mask.astype(np.float32))
        masks.append(apply_chain(mask_volume, mask_chain, case.case_id).as_tensor())
    size = np.max([tuple(image.shape[1:]) for image in images], axis=0).tolist()
    pad = SpatialPad(spatial_size=size)
    # Plain tensors: MONAI's MetaTensor would track metadata through every training op.
    images = [_plain(pad(image)) for image in images]
    masks = [(_plain(pad(mask)) > 0.5).float() for mask in masks]
    return torch.stack(images), torch.stack(masks)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def data_fingerprint(data: Path, train: list[SegCase], val: list[SegCase]) -> dict[str, Any]:
    """Enough to tell later which cases a model saw, without storing any of them."""
    digest = hashlib.sha256()
    for case in train + val:
        digest.update(case.case_id.encode() + b"\0")
    return {
        "data": Path(data).name,
        "case_ids_sha256": digest.hexdigest(),
        "n_train": len(train),
        "n_val": len(val),
        "train_lesion_cases": sum(case.has_lesion for case in train),
        "val_lesion_cases": sum(case.has_lesion for case in val),
    }


def fit_model_folder(
    data: Path, out: Path, config: LesionSegConfig, image_column: str = "nifti"
) -> tuple[Path, LoopResult, dict[str, Any]]:
    """Train on the cohort at ``data`` (early-stopped on its validation split), write ``out``."""
    cases = read_cohort(Path(data), image_column)
    if len(cases) < 4:
        raise DataError(f"{data}: lesion-seg training needs at least 4 cases, got {len(cases)}")
    train, val = split_cases(cases, config.val_fraction, config.seed)
    if config.spacing is None:
        config = replace(config, spacing=median_spacing(train))
    result = train_network(config, to_tensors(train, config), to_tensors(val, config))
    metrics: dict[str, Any] = {
        "validation_dice": result.best_val_dice,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
    }
    stored = {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "info": LesionSegPlugin.info_for(config, metrics).to_dict(),
        "lesion_seg_config": config.to_dict(),
        "training": {
            "data": data_fingerprint(Path(data), train, val),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
        },
        "metrics": metrics,
    }
    folder = save_model_folder(Path(out), result.model.state_dict(), stored)
    return folder, result, metrics
