"""The fusion MLP: one projection per modality, missing-modality indicators, shared trunk.

A missing modality contributes a zero projection and a 1 in its indicator, so the
trunk learns what "no report" means instead of seeing made-up values. Modality
dropout hides present modalities at random during training, so the model also
answers well when one is absent at test time, and masking a modality (for the
Shapley contributions) asks a question the model was trained to answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from medplug_fusion.config import FusionConfig


class FusionNet(nn.Module):
    """``forward(inputs, present) -> (batch, n_outputs)``; ``present`` is (batch, modalities)."""

    def __init__(
        self,
        modality_dims: dict[str, int],
        n_outputs: int,
        projection_dim: int = 32,
        hidden_dim: int = 64,
        depth: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.modalities = list(modality_dims)
        self.projections = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(dim, projection_dim),
                    nn.LayerNorm(projection_dim),
                    nn.GELU(),
                    nn.Dropout(dropout),
                )
                for name, dim in modality_dims.items()
            }
        )
        layers: list[nn.Module] = []
        width = projection_dim * len(self.modalities) + len(self.modalities)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)

    def fused(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The trunk's output: the fused representation (also the plugin's embedding)."""
        parts = [
            self.projections[name](inputs[name]) * present[:, index : index + 1]
            for index, name in enumerate(self.modalities)
        ]
        parts.append(1.0 - present)
        return self.trunk(torch.cat(parts, dim=1))

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.head(self.fused(inputs, present))


def drop_modalities(
    present: torch.Tensor, rate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hide each present modality with probability ``rate`` (training only)."""
    if rate <= 0 or present.shape[1] < 2:
        return present
    keep = torch.rand(present.shape, generator=generator) >= rate
    return present * keep.to(present.dtype)


def build_network(modality_dims: dict[str, int], n_outputs: int, config: FusionConfig) -> FusionNet:
    """One ensemble member sized by ``config``: the same call trains it and reloads it."""
    return FusionNet(
        modality_dims,
        n_outputs,
        config.projection_dim,
        config.hidden_dim,
        config.depth,
        config.dropout,
    )
