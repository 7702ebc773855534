"""Find plugins through the ``medplug.plugins`` entry-point group.

Built-in and third-party plugins are found the same way: a distribution
declares ``[project.entry-points."medplug.plugins"] my-name = "pkg.mod:Class"``.

Describing a plugin must not cost importing it (torch, MONAI, transformers take
seconds), so a plugin may ship a static declaration, ``medplug-plugin.json``
(its ``PluginInfo`` as JSON), in the folder of the module its entry point
names. The folder is found with ``importlib.util.find_spec`` on the top-level
package, which locates files without executing them. A plugin without a
declaration is imported to describe it, as before. Import errors surface when
the plugin is loaded, or at once for undeclared ones: either way a broken
plugin is listed with its error and never stops the others.
"""

from __future__ import annotations

import importlib.util
import json
import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from medplug.contract import Plugin, PluginInfo
from medplug.errors import ModelFileError, PluginError, PluginNotFoundError

PLUGIN_GROUP = "medplug.plugins"
TRAINER_GROUP = "medplug.trainers"
MODELS_ENV = "MEDPLUG_MODELS"
DECLARATION_NAME = "medplug-plugin.json"


@dataclass
class PluginEntry:
    """One discovered entry point: described (statically or by import) or failed."""

    name: str
    target: str
    distribution: str | None
    distribution_version: str | None
    info: PluginInfo | None = None
    error: str | None = None
    error_trace: str | None = None
    static: bool = False  # described from its declaration, not imported
    _entry_point: EntryPoint | None = field(default=None, repr=False)
    _class: type[Plugin] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.info is not None

    def describe(self) -> PluginInfo | None:
        return self.info

    @property
    def plugin_class(self) -> type[Plugin] | None:
        """The plugin class, imported on first use (None, with ``error`` set, if it fails)."""
        if self._class is None and self.error is None and self._entry_point is not None:
            self._import()
        return self._class

    def _import(self) -> None:
        assert self._entry_point is not None
        try:
            loaded = self._entry_point.load()
        except Exception as exc:  # a third party's import error must not stop discovery
            self.error = f"{type(exc).__name__}: {exc}"
            self.error_trace = traceback.format_exc()
            return
        if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
            self.error = f"{self.target} is not a medplug.contract.Plugin subclass"
            return
        self._class = loaded
        if self.info is None:
            self.info = loaded.describe()


def declaration_path(target: str) -> Path | None:
    """Where the declaration of entry point ``pkg.mod:Class`` would be, without importing.

    Only the top-level package is located by ``find_spec`` (locating a dotted name
    would execute its parents' ``__init__``); the rest of the path is walked on disk.
    """
    module = target.split(":", 1)[0].strip()
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:  # a package: walk down to the module's folder
        folder = Path(next(iter(spec.submodule_search_locations)))
        for part in parts[1:-1]:
            folder = folder / part
        if len(parts) > 1 and (folder / parts[-1]).is_dir():
            folder = folder / parts[-1]  # the target is itself a sub-package
    elif spec.origin and len(parts) == 1:
        folder = Path(spec.origin).parent
    else:
        return None
    path = folder / DECLARATION_NAME
    return path if path.is_file() else None


def read_declaration(path: Path) -> PluginInfo:
    """``PluginInfo`` from a plugin's declaration file (also used by plugins' ``describe``)."""
    data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    return PluginInfo.from_dict(data)


def _entry(entry_point: EntryPoint) -> PluginEntry:
    dist = getattr(entry_point, "dist", None)
    entry = PluginEntry(
        name=entry_point.name,
        target=entry_point.value,
        distribution=dist.name if dist else None,
        distribution_version=dist.version if dist else None,
        _entry_point=entry_point,
    )
    declared = declaration_path(entry_point.value)
    if declared is not None:
        try:
            info = read_declaration(declared)
        except (OSError, ValueError, TypeError) as exc:
            entry.error = f"{declared}: unreadable plugin declaration ({exc})"
            return entry
        if info.name == entry.name:
            entry.info, entry.static = info, True
            return entry
    entry._import()  # no (matching) declaration: describing it means importing it
    return entry


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=PLUGIN_GROUP):
        found.setdefault(entry_point.name, entry_point)  # first distribution on sys.path wins
    return found


def discover() -> list[PluginEntry]:
    """Every plugin entry point, each described independently, sorted by name."""
    return sorted((_entry(ep) for ep in _entry_points().values()), key=lambda e: e.name)


def plugin_class(name: str) -> type[Plugin]:
    """The plugin class registered under ``name``; clear error if absent or broken."""
    found = _entry_points()
    if name not in found:  # refused from entry-point names alone: nothing is imported
        known = ", ".join(sorted(found)) or "none"
        raise PluginNotFoundError(f"no plugin named {name!r} is installed (installed: {known})")
    entry = _entry(found[name])
    cls = entry.plugin_class
    if cls is None:
        raise PluginError(f"plugin {name!r} ({entry.target}) failed to load: {entry.error}")
    return cls


def check_plugin_name(name: str) -> None:
    """Refuse an unknown plugin name before any slow work (reading files, imports)."""
    found = _entry_points()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginNotFoundError(f"no plugin named {name!r} is installed (installed: {known})")


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
    from medplug.threads import apply_thread_policy

    check_plugin_name(name)
    folder = Path(model_dir) if model_dir is not None else default_model_dir(name)
    if not folder.is_dir():
        raise ModelFileError(
            f"plugin {name!r} has no model folder at {folder}; train one with "
            f"`medplug train`, run `make demo` for the demonstration models, or set "
            f"{MODELS_ENV} to a folder holding {name}/"
        )
    cls = plugin_class(name)
    apply_thread_policy()
    plugin = cls.from_pretrained(folder)
    # A folder without medplug.json (a MONAI bundle, an HF checkpoint) keeps the identity
    # its plugin computed from the folder's files, if any.
    plugin.model_identity = model_identity(folder) or plugin.model_identity
    plugin.model_dir = folder
    return plugin


def model_identity(model_dir: str | Path) -> str | None:
    """The model's identity: sha256 of the folder's ``medplug.json``, ``None`` without one.

    ``medplug.json`` holds the settings and every weight file's hash, and loading
    verifies them, so equal identities compute equal outputs (docs/DEVELOPING.md).
    """
    from medplug.model_folder import CONFIG_NAME, sha256_file  # torch: only once loading

    description = Path(model_dir) / CONFIG_NAME
    return sha256_file(description) if description.is_file() else None
