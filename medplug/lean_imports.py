"""Import MONAI without the optional libraries medplug never uses through it.

``import monai`` imports every MONAI sub-package, and two optional imports in
there dominate: ``monai.networks.nets.transchex`` pulls in transformers' BERT
(a quarter of a one-case ``medplug predict``, measured), and
``monai.visualize`` / ``monai.utils.jupyter_utils`` pull in matplotlib.pyplot.
MONAI imports both through ``optional_import``, which degrades to a stub that
raises on use when the import fails. So while MONAI's own package is executed
(and only if those libraries are not loaded yet), they are made unimportable;
afterwards they import normally for whoever wants them (the report plugin
imports transformers itself, plots import matplotlib).

Only MONAI's ``Transchex`` network and its matplotlib plotting helpers
(``matshow3d``, ``blend_images``) lose their optional dependency in that
process; medplug uses neither.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

HELD_BACK = ("transformers", "matplotlib", "pandas", "sklearn")


class _HoldBackLoader(importlib.abc.Loader):
    """Runs MONAI's ``__init__`` with ``HELD_BACK`` libraries unimportable."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        held = [name for name in HELD_BACK if name not in sys.modules]
        for name in held:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name in held:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]


class _MonaiFinder(importlib.abc.MetaPathFinder):
    """Finds ``monai`` as usual, once, and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "monai":
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _HoldBackLoader(spec.loader)
        return spec


_finder = _MonaiFinder()


def install() -> None:
    """Take effect at the first ``import monai`` of this process (no-op if already done)."""
    if "monai" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
