"""The trained fusion model as numbers: network ensemble plus what turns outputs into answers.

Kept apart from the plugin so training, benchmarks and the plugin share one
object that works on ready-made feature arrays (``FusionInputs``); the plugin
adds turning ``Case`` objects into those arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medplug.calibration import softmax_with_temperature
from medplug_fusion.network import FusionNet
from medplug_fusion.survival import survival_probability


@dataclass
class FusionInputs:
    """Per-modality feature rows (zeros where absent) and a presence mask."""

    features: dict[str, np.ndarray]
    present: np.ndarray  # (n, modalities) of 0/1, columns in ``modalities`` order
    modalities: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def subset(self, index: np.ndarray) -> FusionInputs:
        return FusionInputs(
            {name: values[index] for name, values in self.features.items()},
            self.present[index],
            list(self.modalities),
        )

    def with_present(self, present: np.ndarray) -> FusionInputs:
        return FusionInputs(dict(self.features), present, list(self.modalities))

    def tensors(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in self.features.items()}
        return features, torch.as_tensor(self.present, dtype=torch.float32)


class FusionEnsemble(nn.Module):
    """Several ``FusionNet`` members trained from different seeds; outputs are averaged."""

    def __init__(self, members: list[FusionNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(inputs, present) for member in self.members]).mean(0)

    def fused(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return torch.cat([member.fused(inputs, present) for member in self.members], dim=1)


@dataclass
class FusionModel:
    """Network plus calibration (classification) or baseline hazard (survival)."""

    task: str
    modalities: list[str]
    network: FusionEnsemble
    labels: list[str] = field(default_factory=list)
    temperature: float = 1.0
    threshold: float = 0.5
    baseline_times: np.ndarray | None = None
    baseline_cumulative_hazard: np.ndarray | None = None

    @torch.no_grad()
    def raw(self, inputs: FusionInputs) -> np.ndarray:
        """Logits (classification) or log-risk (survival, shape (n,))."""
        self.network.eval()
        features, present = inputs.tensors()
        out = self.network(features, present).double().numpy()
        return out[:, 0] if self.task == "survival" else out

    def probabilities(self, inputs: FusionInputs) -> np.ndarray:
        """Calibrated class probabilities, (n, classes)."""
        return softmax_with_temperature(self.raw(inputs), self.temperature)

    def score(self, inputs: FusionInputs) -> np.ndarray:
        """The scalar each case is ranked and explained by: P(positive) for binary
        tasks, the top class probability for multiclass, log-risk for survival."""
        if self.task == "survival":
            return self.raw(inputs)
        probs = self.probabilities(inputs)
        return probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)

    def survival(self, inputs: FusionInputs, times: np.ndarray) -> np.ndarray:
        assert self.baseline_times is not None and self.baseline_cumulative_hazard is not None
        return survival_probability(
            self.raw(inputs), self.baseline_times, self.baseline_cumulative_hazard, times
        )

    @torch.no_grad()
    def fused_embedding(self, inputs: FusionInputs) -> np.ndarray:
        self.network.eval()
        features, present = inputs.tensors()
        return self.network.fused(features, present).numpy()
