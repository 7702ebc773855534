"""A seed ensemble stored as one network, so one model folder holds every member.

Members trained from different seeds disagree where the data say little, and
averaging their logits lowers the variance that makes a single small CNN's
test AUC swing by a few points between seeds. Keeping them in one
``nn.Module`` means one safetensors file, one hash check, one strict
``load_state_dict``, and one forward pass for ``predict_batch``.
"""

from __future__ import annotations

import torch
from torch import nn


class SeedEnsemble(nn.Module):
    """Independently trained members of one architecture; the output is their mean logit."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(images) for member in self.members]).mean(0)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The member networks of an ensemble, or the network itself."""
    return list(model.members) if isinstance(model, SeedEnsemble) else [model]


def member_seed(seed: int, member: int) -> int:
    """Member 0 keeps the run's seed; members of runs with seeds below 1000 never collide."""
    return seed + 1000 * member
