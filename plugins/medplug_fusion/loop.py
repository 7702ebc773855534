"""Fitting the fusion network on ready-made feature arrays.

Early stopping and calibration use one held-out validation split; each
ensemble member starts from its own seed. Classification gets a temperature
and a Youden operating point on that split; survival gets the Breslow
baseline hazard on all training cases.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from medplug.calibration import fit_temperature, softmax_with_temperature
from medplug.errors import DataError
from medplug.evaluation import youden_threshold
from medplug.progress import report
from medplug_fusion.config import FusionConfig
from medplug_fusion.model import FusionEnsemble, FusionInputs, FusionModel
from medplug_fusion.network import FusionNet, build_network, drop_modalities
from medplug_fusion.survival import (
    breslow_baseline,
    check_survival_targets,
    cox_partial_likelihood,
)


def split_indices(
    n: int, config: FusionConfig, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(n)
    stratify = labels if labels is not None and np.bincount(labels).min() >= 2 else None
    train, val = train_test_split(
        index, test_size=config.validation_fraction, random_state=config.seed, stratify=stratify
    )
    return np.sort(train), np.sort(val)


def fit_model(
    config: FusionConfig,
    inputs: FusionInputs,
    labels: np.ndarray | None = None,
    durations: np.ndarray | None = None,
    events: np.ndarray | None = None,
) -> FusionModel:
    """Train the ensemble; ``labels`` for classification, ``durations``/``events`` for survival."""
    survival = config.task == "survival"
    if survival:
        if durations is None or events is None:
            raise DataError("survival training needs durations and events")
        durations = np.asarray(durations, dtype=np.float64)
        events = np.asarray(events, dtype=np.float64)
        check_survival_targets(durations, events)
        n_outputs = 1
        label_names: list[str] = []
    else:
        if labels is None:
            raise DataError("classification training needs labels")
        labels = np.asarray(labels).astype(int)
        n_classes = max(int(labels.max()) + 1, len(config.labels), 2)
        if np.bincount(labels, minlength=n_classes).min() < 2:
            raise DataError("every class needs at least two training cases")
        n_outputs = n_classes
        label_names = config.labels or [str(i) for i in range(n_classes)]
    train_idx, val_idx = split_indices(len(inputs), config, None if survival else labels)
    dims = {name: int(inputs.features[name].shape[1]) for name in inputs.modalities}
    members = []
    for member in range(config.ensemble):
        torch.manual_seed(config.seed * 1000 + member)
        if survival and member > 0:
            # Nothing to calibrate on a held-out split here, so each member early-stops
            # on its own split and the ensemble as a whole learns from every case.
            member_config = FusionConfig.from_dict(
                {**config.to_dict(), "seed": config.seed + member}
            )
            train_idx, val_idx = split_indices(len(inputs), member_config, None)
        net = build_network(dims, n_outputs, config)
        members.append(
            _train_member(
                net, config, inputs, train_idx, val_idx, labels, durations, events, member
            )
        )
    model = FusionModel(
        task=config.task,
        modalities=list(inputs.modalities),
        network=FusionEnsemble(members),
        labels=label_names,
    )
    if survival:
        model.baseline_times, model.baseline_cumulative_hazard = breslow_baseline(
            model.raw(inputs), durations, events
        )
    else:
        val_logits = model.raw(inputs.subset(val_idx))
        model.temperature = fit_temperature(val_logits, labels[val_idx])
        if n_outputs == 2:
            val_probs = softmax_with_temperature(val_logits, model.temperature)[:, 1]
            if len(np.unique(labels[val_idx])) == 2:
                model.threshold = youden_threshold(labels[val_idx], val_probs)
    return model


def _val_auc(out: torch.Tensor, labels: np.ndarray) -> float | None:
    """Validation AUC for progress display (two classes, both present), else None."""
    if out.shape[1] != 2 or len(np.unique(labels)) != 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, (out[:, 1] - out[:, 0]).numpy()))


def _train_member(
    net: FusionNet,
    config: FusionConfig,
    inputs: FusionInputs,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    labels: np.ndarray | None,
    durations: np.ndarray | None,
    events: np.ndarray | None,
    member: int,
) -> FusionNet:
    generator = torch.Generator().manual_seed(config.seed * 1000 + member)
    features, present = inputs.tensors()
    if config.task == "survival":
        assert durations is not None and events is not None
        times_t = torch.as_tensor(durations, dtype=torch.float32)
        events_t = torch.as_tensor(events, dtype=torch.float32)

        def loss_fn(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return cox_partial_likelihood(out[:, 0], times_t[idx], events_t[idx])
    else:
        assert labels is not None
        labels_t = torch.as_tensor(labels, dtype=torch.long)

        def loss_fn(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(out, labels_t[idx])

    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    train_t = torch.as_tensor(train_idx)
    val_t = torch.as_tensor(val_idx)
    val_features = {k: v[val_t] for k, v in features.items()}
    best_loss, best_state, stale = float("inf"), copy.deepcopy(net.state_dict()), 0
    stage = f"member {member + 1}/{config.ensemble}"
    for epoch in range(config.max_epochs):
        net.train()
        losses = []
        order = train_t[torch.randperm(len(train_t), generator=generator)]
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:
                continue
            batch_present = drop_modalities(present[batch], config.modality_dropout, generator)
            out = net({k: v[batch] for k, v in features.items()}, batch_present)
            loss = loss_fn(out, batch)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            val_out = net(val_features, present[val_t])
            val_loss = float(loss_fn(val_out, val_t))
        report(
            stage, epoch + 1, config.max_epochs,
            loss=float(np.mean(losses)) if losses else None, val_loss=val_loss,
            val_auc=_val_auc(val_out, labels[val_idx]) if labels is not None else None,
        )  # fmt: skip
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, stale = val_loss, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return net
