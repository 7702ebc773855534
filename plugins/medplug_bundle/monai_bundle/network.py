"""The bundle's network with its weights: a state dict into ``network_def``, or TorchScript.

Preference: ``models/model.safetensors``, then ``models/model.pt`` (weights only),
both loaded into the config's ``network_def``; then ``models/model.ts``. A
folder with only other files in ``models/`` is refused, naming them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medplug.errors import ModelFileError
from medplug_bundle.weights import load_state_dict, load_torchscript

STATE_DICT_NAMES = ("model.safetensors", "model.pt", "model.pth")
TORCHSCRIPT_NAME = "model.ts"


def load_network(bundle: Path, network_def: torch.nn.Module | None) -> tuple[torch.nn.Module, Path]:
    """The runnable network (eval mode, CPU) and the weights file it came from."""
    models = bundle / "models"
    if network_def is not None:
        for name in STATE_DICT_NAMES:
            path = models / name
            if path.is_file():
                state = load_state_dict(path)
                try:
                    network_def.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    detail = " ".join(str(exc).split())[:200]
                    raise ModelFileError(
                        f"{path}: weights do not fit configs/inference.json network_def ({detail})"
                    ) from None
                return network_def.eval(), path
    script = models / TORCHSCRIPT_NAME
    if script.is_file():
        return load_torchscript(script), script
    present = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    wanted = (
        ", ".join(STATE_DICT_NAMES + (TORCHSCRIPT_NAME,))
        if network_def is not None
        else TORCHSCRIPT_NAME + " (configs/inference.json has no network_def)"
    )
    raise ModelFileError(
        f"{models}: no loadable weights; expected {wanted}, found {present or 'nothing'}"
    )
