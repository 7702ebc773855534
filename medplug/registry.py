"""Find plugins through the ``medplug.plugins`` entry-point group.

Built-in and third-party plugins are found the same way: a distribution
declares ``[project.entry-points."medplug.plugins"] my-name = "pkg.mod:Class"``.
Entry points are loaded lazily, one by one, so a broken third-party plugin is
reported with its error and never stops the others from being listed or used.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from medplug.contract import Plugin, PluginInfo
from medplug.errors import ModelFileError, PluginError, PluginNotFoundError

PLUGIN_GROUP = "medplug.plugins"
TRAINER_GROUP = "medplug.trainers"
MODELS_ENV = "MEDPLUG_MODELS"


@dataclass
class PluginEntry:
    """One discovered entry point, loaded or not, with the error if it failed."""

    name: str
    target: str
    distribution: str | None
    distribution_version: str | None
    plugin_class: type[Plugin] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.plugin_class is not None

    def describe(self) -> PluginInfo | None:
        return self.plugin_class.describe() if self.plugin_class else None


def _load_entry(entry_point: EntryPoint) -> PluginEntry:
    dist = getattr(entry_point, "dist", None)
    entry = PluginEntry(
        name=entry_point.name,
        target=entry_point.value,
        distribution=dist.name if dist else None,
        distribution_version=dist.version if dist else None,
    )
    try:
        loaded = entry_point.load()
    except Exception as exc:  # a third party's import error must not stop discovery
        entry.error = f"{type(exc).__name__}: {exc}"
        entry.error_trace = traceback.format_exc()  # type: ignore[attr-defined]
        return entry
    if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
        entry.error = f"{entry.target} is not a medplug.contract.Plugin subclass"
        return entry
    entry.plugin_class = loaded
    return entry


def discover() -> list[PluginEntry]:
    """Every plugin entry point, each loaded independently, sorted by name."""
    seen: dict[str, PluginEntry] = {}
    for entry_point in entry_points(group=PLUGIN_GROUP):
        if entry_point.name not in seen:  # first distribution on sys.path wins
            seen[entry_point.name] = _load_entry(entry_point)
    return sorted(seen.values(), key=lambda entry: entry.name)


def plugin_class(name: str) -> type[Plugin]:
    """The plugin class registered under ``name``; clear error if absent or broken."""
    matches = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(entry.name for entry in discover()) or "none"
        raise PluginNotFoundError(f"no plugin named {name!r} is installed (installed: {known})")
    entry = _load_entry(matches[0])
    if entry.plugin_class is None:
        raise PluginError(f"plugin {name!r} ({entry.target}) failed to load: {entry.error}")
    return entry.plugin_class


def default_model_dir(name: str) -> Path:
    """Where a plugin's model lives when none is given.

    ``$MEDPLUG_MODELS/<name>`` when the variable is set; otherwise the first of
    ``./models/<name>`` and the demonstration models ``make demo`` trains in the
    checkout (``sample_data/models/<name>``) that exists, so the README's
    commands work after ``make demo`` without setting anything.
    """
    given = os.environ.get(MODELS_ENV)
    if given:
        return Path(given) / name
    candidates = [Path("models") / name, _checkout_demo_models() / name]
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


def _checkout_demo_models() -> Path:
    """``sample_data/models`` of the checkout medplug runs from (an editable install)."""
    return Path(__file__).resolve().parent.parent / "sample_data" / "models"


def load_plugin(name: str, model_dir: str | Path | None = None) -> Plugin:
    """Load plugin ``name`` with the model in ``model_dir`` (or its default folder)."""
    cls = plugin_class(name)
    folder = Path(model_dir) if model_dir is not None else default_model_dir(name)
    if not folder.is_dir():
        raise ModelFileError(
            f"plugin {name!r} has no model folder at {folder}; train one with "
            f"`medplug train`, run `make demo` for the demonstration models, or set "
            f"{MODELS_ENV} to a folder holding {name}/"
        )
    plugin = cls.from_pretrained(folder)
    plugin.model_identity = model_identity(folder)
    return plugin


def model_identity(model_dir: str | Path) -> str | None:
    """sha256 of the folder's ``medplug.json`` (which holds its weights' hashes), if any."""
    from medplug.model_folder import CONFIG_NAME, sha256_file  # torch: only once loading

    description = Path(model_dir) / CONFIG_NAME
    return sha256_file(description) if description.is_file() else None
