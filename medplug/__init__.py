"""medplug: run medical AI where clinicians already work, through one predict contract."""

from medplug import lean_imports
from medplug.contract import (
    Case,
    Explanation,
    ImageVolume,
    InputSpec,
    Plugin,
    PluginInfo,
    Prediction,
)
from medplug.errors import MedplugError
from medplug.registry import discover, load_plugin

lean_imports.install()  # before anything imports MONAI: see medplug/lean_imports.py

__version__ = "0.1.0"

__all__ = [
    "Case",
    "Explanation",
    "ImageVolume",
    "InputSpec",
    "MedplugError",
    "Plugin",
    "PluginInfo",
    "Prediction",
    "discover",
    "load_plugin",
]
