"""Train a classifier: MONAI augmentation, AdamW, one-cycle schedule, early stopping on val AUC.

Images are preprocessed once with the model's stored chain (deterministic),
then augmented per batch (``augment.BatchAugment``), so the network sees
at inference exactly the preprocessing it was trained on.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medplug.errors import DataError
from medplug_image.augment import BatchAugment
from medplug_image.config import ImageModelConfig
from medplug_image.datasets import LabelledImages
from medplug_image.ensemble import SeedEnsemble, member_seed
from medplug_image.networks import build_member
from medplug_image.preprocessing import build_preprocess, preprocess_volume

EpochCallback = Callable[[dict], None]


@dataclass
class TrainResult:
    model: nn.Module  # one network, or a SeedEnsemble of the members
    history: list[dict] = field(default_factory=list)  # per member and epoch
    best_epochs: list[int] = field(default_factory=list)  # one per member
    best_val_auc: float = float("nan")  # of the whole model, on its mean val logits
    val_logits: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def best_epoch(self) -> int:
        """The kept epoch (the latest one over members, for an ensemble)."""
        return max(self.best_epochs, default=0)


def to_tensors(data: LabelledImages, config: ImageModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess every image once; (N, C, *spatial_size) float32 and (N,) labels."""
    if len(data) == 0:
        raise DataError(f"{data.source}: no images")
    transform = build_preprocess(config)
    images = [
        preprocess_volume(volume, transform, config, case_id).as_tensor()
        for volume, case_id in zip(data.volumes, data.case_ids, strict=True)
    ]
    return torch.stack(images), torch.as_tensor(data.labels, dtype=torch.long)


def roc_auc(labels: np.ndarray, logits: np.ndarray) -> float:
    """Binary AUC of the positive class, or macro one-vs-rest AUC for more classes."""
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", labels=range(probs.shape[1])))


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, tta_flips: list[int] = ()
) -> np.ndarray:
    """Logits for preprocessed images, averaged over optional test-time flips."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        views = [batch] + [torch.flip(batch, dims=[2 + axis]) for axis in tta_flips]
        outputs.append(torch.stack([model(view) for view in views]).mean(0))
    return torch.cat(outputs).float().numpy()


def train_model(
    config: ImageModelConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config.ensemble`` members from scratch; each keeps its best-val-AUC epoch.

    The ensemble's validation logits (the members' mean, as at inference) are
    what calibration and the operating point are fitted on.
    """
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    _check_labels(train[1], val[1], config)
    runs = [
        _train_member(config, member, train, val, on_epoch) for member in range(config.ensemble)
    ]
    model = runs[0].model if len(runs) == 1 else SeedEnsemble([run.model for run in runs])
    model.eval()
    val_logits = np.mean([run.val_logits for run in runs], axis=0)
    return TrainResult(
        model=model,
        history=[record for run in runs for record in run.history],
        best_epochs=[run.best_epoch for run in runs],
        best_val_auc=roc_auc(val[1].numpy(), val_logits),
        val_logits=val_logits,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _MemberRun:
    model: nn.Module
    history: list[dict]
    best_epoch: int
    val_logits: np.ndarray


def _train_member(
    config: ImageModelConfig,
    member: int,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    on_epoch: EpochCallback | None,
) -> _MemberRun:
    """One network from its own seed, early-stopped on validation AUC."""
    seed = member_seed(config.seed, member)
    set_determinism(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = train
    val_x, val_y = val
    model = build_member(config)
    augment = BatchAugment(config.augment, config.spatial_dims, seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        total_steps=max(1, config.epochs * steps_per_epoch),
        pct_start=0.15,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    mix = Mixup(config.mixup, seed) if config.mixup > 0 else None
    averaged = weight_average(model, config.weight_ema)
    evaluated = averaged.module if averaged is not None else model
    history: list[dict] = []
    best_state, best_key, stale = None, (-math.inf, -math.inf), 0
    best_epoch, best_logits = 0, None
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            if len(index) < 2:  # batch norm needs two samples
                continue
            loss = _batch_loss(model, loss_fn, augment(train_x[index]), train_y[index], mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += float(loss.detach()) * len(index)
            seen += len(index)
        val_logits = predict_logits(evaluated, val_x, tta_flips=config.tta_flips)
        val_auc = roc_auc(val_y.numpy(), val_logits)
        val_loss = float(nn.functional.cross_entropy(torch.as_tensor(val_logits), val_y))
        record = {
            "member": member,
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "val_auc": val_auc,
            "val_loss": val_loss,
        }
        history.append(record)
        if on_epoch:
            on_epoch(record)
        key = (val_auc if math.isfinite(val_auc) else -math.inf, -val_loss)
        if best_state is None or key > best_key:  # best AUC; ties go to the lower val loss
            best_key, stale = key, 0
            best_state = copy.deepcopy(evaluated.state_dict())
            best_epoch, best_logits = epoch, val_logits
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return _MemberRun(model, history, best_epoch, best_logits)


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers, or None (decay 0).

    Averaging the weights along the end of training lands in a flatter region
    of the loss than the last step (Izmailov et al. 2018, SWA); batch-norm
    statistics are averaged with them, so the average runs as it is. Off in the
    shipped configs: on PneumoniaMNIST (decay 0.995) it lowered val AUC
    (``benchmarks/results/image-sweep.md``).
    """
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Mixup:
    """Mixup (Zhang et al. 2018): a convex mix of two images learns the mixed target.

    Smooths the decision boundary, a common remedy when a CNN memorises a small
    training set. Off in the shipped configs: on BreastMNIST (546 training
    images) it lowered val AUC (``benchmarks/results/image-sweep.md``).
    """

    def __init__(self, alpha: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.alpha = alpha
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Mixed images, the partner index of each image, and the weight of the original."""
        weight = float(self.rng.beta(self.alpha, self.alpha))
        partner = torch.randperm(len(images), generator=self.generator)
        return weight * images + (1 - weight) * images[partner], partner, weight


def _batch_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mix: Mixup | None,
) -> torch.Tensor:
    if mix is None:
        return loss_fn(model(images), labels)
    mixed, partner, weight = mix(images)
    logits = model(mixed)
    return weight * loss_fn(logits, labels) + (1 - weight) * loss_fn(logits, labels[partner])


def _check_labels(train_y: torch.Tensor, val_y: torch.Tensor, config: ImageModelConfig) -> None:
    for name, labels in (("training", train_y), ("validation", val_y)):
        if len(labels) == 0:
            raise DataError(f"the {name} split is empty")
        if int(labels.min()) < 0 or int(labels.max()) >= config.num_classes:
            raise DataError(f"{name} labels fall outside the configured labels {config.labels}")
    if len(torch.unique(train_y)) < 2:
        raise DataError("the training split holds only one class; nothing to learn")
