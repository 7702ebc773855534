"""Loading weights without unpickling: safetensors, weights-only ``torch.load``, TorchScript.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers;
a file that needs full unpickling (a pickled ``nn.Module``, a custom class) is
refused with its file name, never opened the unsafe way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medplug.errors import ModelFileError

StateDict = dict[str, torch.Tensor]


def load_state_dict(path: Path) -> StateDict:
    """A state dict from ``.safetensors`` or a weights-only ``.pt``/``.pth`` file.

    A checkpoint that wraps the state dict in one entry (``{"model": {...}}``, as
    MONAI's ``CheckpointSaver`` writes) is unwrapped, as ``CheckpointLoader`` does.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError: all mean "not weights only"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: not a weights-only state dict; medplug never unpickles model files "
            f"(torch.load(weights_only=True) refused it: {first[:160]})"
        ) from None
    if isinstance(loaded, dict) and len(loaded) == 1:
        (inner,) = loaded.values()
        if isinstance(inner, dict):
            loaded = inner
    if not isinstance(loaded, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ModelFileError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors")
    return loaded


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """A TorchScript archive on the CPU, in eval mode."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError with long C++ traces
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a TorchScript archive ({first[:160]})") from None
    return module.eval()
