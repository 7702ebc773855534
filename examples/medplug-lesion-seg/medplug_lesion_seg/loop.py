"""The epoch loop: patches, DiceCE loss, AdamW with a cosine schedule, early stopping.

Images and masks arrive preprocessed once (the stored chain is deterministic).
Each epoch draws ``patches_per_case`` patches per training case, most of them
centred on a lesion voxel, and flips them at random: whole volumes cost ~8x
more per step on a CPU and hold ~100 lesion voxels in 130k. Validation runs
on whole volumes, the way the plugin predicts, and the kept weights are those
of the epoch with the best validation Dice.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from medplug.progress import report
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn

from medplug_lesion_seg.config import LesionSegConfig
from medplug_lesion_seg.evaluate import case_dice
from medplug_lesion_seg.network import build_network
from medplug_lesion_seg.postprocess import lesion_mask


@dataclass
class LoopResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)  # one record per epoch
    best_epoch: int = 0
    best_val_dice: float = float("nan")
    seconds: float = 0.0


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, batch_size: int = 4
) -> torch.Tensor:
    """Voxel P(lesion) for preprocessed (N, 1, X, Y, Z) images."""
    model.eval()
    outputs = [
        torch.sigmoid(model(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(outputs)


def mean_dice(probabilities: torch.Tensor, masks: torch.Tensor, config: LesionSegConfig) -> float:
    """Mean per-case Dice of the plugin's masks; a case with no lesion scores 1 only if
    nothing is predicted."""
    truth = masks.numpy() > 0.5
    return float(
        np.mean(
            [
                case_dice(lesion_mask(p[0], config.threshold, config.single_lesion), t[0])
                for p, t in zip(probabilities.numpy(), truth, strict=True)
            ]
        )
    )


class PatchSampler:
    """Draws training patches (and random flips) from preprocessed volumes, reproducibly."""

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        config: LesionSegConfig,
        generator: torch.Generator,
    ) -> None:
        self.images, self.masks, self.config, self.generator = images, masks, config, generator
        spatial = images.shape[2:]
        self.size = [min(p, n) for p, n in zip(config.patch_size, spatial, strict=True)]
        self.lesion_voxels = [torch.nonzero(mask[0] > 0.5) for mask in masks]
        # Hard negatives: voxels as dense as the lesions (chest wall, spine) but outside them,
        # where whole-volume predictions otherwise put false positives.
        dense = [
            float(image[mask > 0.5].mean())
            for image, mask in zip(images, masks, strict=True)
            if mask.any()
        ]
        level = float(np.mean(dense)) if dense else 0.5
        self.hard_voxels = [
            torch.nonzero((torch.abs(image[0] - level) < 0.1) & (mask[0] < 0.5))
            for image, mask in zip(images, masks, strict=True)
        ]

    def _uniform(self, high: int) -> int:
        return int(torch.randint(0, max(high, 1), (), generator=self.generator))

    def _corner(self, index: int) -> list[int]:
        shape = self.images.shape[2:]
        voxels = self.lesion_voxels[index]
        on_lesion = len(voxels) and (
            torch.rand((), generator=self.generator).item() < self.config.lesion_patch_fraction
        )
        hard = self.hard_voxels[index]
        if on_lesion:
            centre = voxels[self._uniform(len(voxels))].tolist()
        elif (
            len(hard)
            and torch.rand((), generator=self.generator).item() < self.config.hard_negative_fraction
        ):
            centre = hard[self._uniform(len(hard))].tolist()
        else:
            centre = [self._uniform(n) for n in shape]
        return [
            int(np.clip(c - s // 2, 0, n - s))
            for c, s, n in zip(centre, self.size, shape, strict=True)
        ]

    def epoch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's batches of (image, mask) patches, shuffled."""
        items = [
            index for index in range(len(self.images)) for _ in range(self.config.patches_per_case)
        ]
        order = torch.randperm(len(items), generator=self.generator).tolist()
        images, masks = [], []
        for position in order:
            index = items[position]
            x, y, z = self._corner(index)
            sx, sy, sz = self.size
            window = (slice(None), slice(x, x + sx), slice(y, y + sy), slice(z, z + sz))
            image, mask = self.images[index][window], self.masks[index][window]
            axes = [
                1 + axis
                for axis in range(3)
                if torch.rand((), generator=self.generator).item() < self.config.flip_prob
            ]
            if axes:
                image, mask = torch.flip(image, dims=axes), torch.flip(mask, dims=axes)
            images.append(image)
            masks.append(mask)
        size = self.config.batch_size
        return [
            (torch.stack(images[start : start + size]), torch.stack(masks[start : start + size]))
            for start in range(0, len(images), size)
        ]


def train_network(
    config: LesionSegConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
) -> LoopResult:
    """Train the UNet from ``config.seed``; keep the epoch with the best validation Dice."""
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    set_determinism(seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = PatchSampler(*train, config, generator)
    val_x, val_y = val
    model = build_network(config)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    per_epoch = -(-len(train[0]) * config.patches_per_case // config.batch_size)
    # No warm-up: measured, a warm-up delayed the first useful masks by several epochs.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * per_epoch)
    result = LoopResult(model=model)
    best_state, since_best = None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        for images, masks in sampler.epoch():
            optimizer.zero_grad()
            loss = loss_fn(model(images), masks)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        val_dice = mean_dice(predict_probabilities(model, val_x), val_y, config)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": val_dice}
        result.history.append(record)
        report("fit", epoch, config.epochs, loss=record["loss"], val_dice=val_dice)
        if best_state is None or val_dice > result.best_val_dice:
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_val_dice, since_best = epoch, val_dice, 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
