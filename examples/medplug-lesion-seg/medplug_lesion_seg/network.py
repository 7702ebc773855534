"""The network: a small MONAI 3D UNet with one output channel (lesion logit)."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from medplug_lesion_seg.config import LesionSegConfig


def build_network(config: LesionSegConfig) -> nn.Module:
    """The UNet ``config`` describes; the same call at training and at loading."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(config.channels),
        strides=tuple(config.strides),
        num_res_units=config.num_res_units,
        norm=config.norm,
    )
