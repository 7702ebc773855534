"""The layer map of docs/DEVELOPING.md holds: no medplug module imports a layer above its own,
and plugins import only the medplug modules a plugin may use.

Read from the source (every ``import``/``from`` statement, including those inside
functions), so a lazy import cannot slip past it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer and the layers below.
LAYERS: list[set[str]] = [
    # foundations: errors and small helpers every layer uses
    {
        "errors",
        "error_categories",
        "phi",
        "safe_paths",
        "progress",
        "threads",
        "lean_imports",
        "strict_config",
        "console",
    },
    {"contract"},
    # reading inputs, finding plugins, model folders, evaluating them
    {
        "ingest",
        "registry",
        "model_folder",
        "model_signing",
        "calibration",
        "evaluation",
        "training_progress",
        "fhir",
        "sampledata",
    },
    # the ways to run plugins, the DICOM objects they write (batch and dicom_out use
    # each other: one layer), and the PACS and viewer they talk to (Orthanc, OHIF)
    {"batch", "serve", "napari_plugin", "dicom_out", "orthanc", "ohif"},
    {"cli"},
]
# What a plugin package may import from medplug (docs/DEVELOPING.md, "What a plugin may import").
PLUGIN_MAY_IMPORT = {
    "errors",
    "error_categories",
    "contract",
    "ingest",
    "registry",
    "model_folder",
    "model_signing",
    "calibration",
    "evaluation",
    "progress",
    "console",
    "training_progress",
    "strict_config",
    "phi",
    "threads",
    "lean_imports",
}


def _layer(area: str) -> int:
    for index, names in enumerate(LAYERS):
        if area in names:
            return index
    raise AssertionError(f"medplug.{area} is on no layer: add it to LAYERS and the docs")


def _medplug_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, area)`` for every ``medplug.<area>`` a file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "medplug":
                names = [f"medplug.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "medplug" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _area(path: Path) -> str:
    relative = path.relative_to(ROOT / "medplug")
    return relative.parts[0].removesuffix(".py")


def test_every_area_is_on_a_layer() -> None:
    areas = {_area(p) for p in (ROOT / "medplug").rglob("*.py")} - {"__init__"}
    for area in areas:
        _layer(area)


def test_no_medplug_module_imports_upward() -> None:
    upward = []
    sources = [
        p
        for p in (ROOT / "medplug").rglob("*.py")
        if p.name != "__init__.py" or p.parent != ROOT / "medplug"
    ]
    for path in sources:
        own = _layer(_area(path))
        for line, area in _medplug_imports(path):
            if _layer(area) > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports medplug.{area}")
    assert not upward, upward


def test_plugins_import_only_what_a_plugin_may() -> None:
    seen = set()
    refused = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for line, area in _medplug_imports(path):
            seen.add(area)
            if area not in PLUGIN_MAY_IMPORT:
                refused.append(f"{path.relative_to(ROOT)}:{line} imports medplug.{area}")
    assert {"contract", "errors", "registry"} <= seen  # the scan sees the imports
    assert not refused, refused
