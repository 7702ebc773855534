"""The report plugin's self-description (``PluginInfo``).

The static part lives in ``medplug-plugin.json`` next to this module, so
``medplug plugins`` describes the plugin without importing transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medplug.contract import PluginInfo
from medplug.registry import DECLARATION_NAME, read_declaration


def plugin_info(
    labels: list[str] | None = None, metrics: dict[str, Any] | None = None
) -> PluginInfo:
    info = read_declaration(Path(__file__).with_name(DECLARATION_NAME))
    info.labels = list(labels or [])
    info.metrics = dict(metrics or {})
    return info
