"""Every failure category raised anywhere in medplug is registered and documented.

Reads the source tree (medplug/ and plugins/) for the places a category is
chosen: ``DicomError`` / ``SeriesGeometryError`` / ``ingest_error`` /
``geometry_error`` / ``guarded`` / ``SkippedFile`` calls, the ingest error
classes' ``super().__init__``, comparisons against ``.category``, and the SOP
class skip rules. A literal must be in ``medplug.error_categories``; a name must
be one of its constants (or a pass-through parameter called ``category``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import medplug.error_categories as registry
from medplug.error_categories import (
    ALL_CATEGORIES,
    BATCH_CATEGORIES,
    LOAD_CATEGORIES,
    SKIP_CATEGORIES,
)
from medplug.ingest import errors as ingest_errors
from medplug.ingest import sop_classes

ROOT = Path(__file__).resolve().parents[1]
_CALLS = {"DicomError", "SeriesGeometryError", "ingest_error", "geometry_error", "guarded"}
_CONSTANTS = {name: getattr(registry, name) for name in registry.__all__}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _category_arg(call: ast.Call) -> ast.expr | None:
    name = _name(call.func)
    is_super_init = (
        name == "__init__"
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Call)
        and _name(call.func.value.func) == "super"
        and len(call.args) == 3
    )
    if name not in _CALLS and name != "SkippedFile" and not is_super_init:
        return None
    for keyword in call.keywords:
        if keyword.arg == "category":
            return keyword.value
    return call.args[1] if len(call.args) > 1 else None


def _categories_in(path: Path) -> list[tuple[str, int, str]]:
    """``(file, line, category)`` for every category chosen in one source file."""
    found: list[tuple[str, int, str]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = str(path.relative_to(ROOT))
    for node in ast.walk(tree):
        values: list[ast.expr] = []
        if isinstance(node, ast.Call) and (arg := _category_arg(node)) is not None:
            values.append(arg)
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "category"
        ):
            values.extend(node.comparators)
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append((where, node.lineno, value.value))
            elif isinstance(value, ast.Name) and value.id in _CONSTANTS:
                found.append((where, node.lineno, _CONSTANTS[value.id]))
            elif isinstance(value, ast.Name) and value.id == "category":
                continue  # a helper passing its caller's (checked) category through
            elif isinstance(value, ast.Attribute) and value.attr == "category":
                continue  # re-raising an existing error's category
            elif where.endswith("scan.py") and ast.unparse(value) == "reason[0]":
                continue  # sop_classes.skip_reason()'s category, checked below
            else:
                found.append(
                    (where, node.lineno, f"<unregistered expression {ast.unparse(value)}>")
                )
    return found


def _all_sources() -> list[Path]:
    return sorted(p for top in ("medplug", "plugins") for p in (ROOT / top).rglob("*.py"))


def test_every_category_raised_in_the_source_tree_is_registered() -> None:
    found = [hit for path in _all_sources() for hit in _categories_in(path)]
    # The scan must see the raise sites, or this test could pass by finding nothing.
    assert len(found) > 40, found
    seen = {category for _, _, category in found}
    assert {"empty-study", "fetch-failed", "bad_geometry", "not_dicom"} <= seen
    unregistered = [hit for hit in found if hit[2] not in ALL_CATEGORIES]
    assert not unregistered, unregistered


def test_skip_rules_and_error_classes_use_registered_categories() -> None:
    rules = {category for _, category in sop_classes._NAME_RULES}
    rules |= set(sop_classes._MODALITY_RULES.values())
    tree = ast.parse(Path(sop_classes.__file__).read_text(encoding="utf-8"))
    returned = [
        node.value.elts[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Return)
        and isinstance(node.value, ast.Tuple)
        and isinstance(node.value.elts[0], ast.Constant)
    ]
    assert {"dicomdir", "no_pixel_data", "missing_uid"} <= set(returned)
    rules |= set(returned)
    assert rules <= set(SKIP_CATEGORIES), rules - set(SKIP_CATEGORIES)
    for cls in vars(ingest_errors).values():
        if isinstance(cls, type) and issubclass(cls, ingest_errors.DicomError):
            if cls in (ingest_errors.DicomError, ingest_errors.SeriesGeometryError):
                continue
            assert cls(None, "detail").category in LOAD_CATEGORIES, cls


def test_one_registry_for_every_layer() -> None:
    from medplug.batch import storage
    from medplug.ingest import LOAD_CATEGORIES as ingest_load
    from medplug.ingest import SKIP_CATEGORIES as ingest_skip

    assert ingest_load is LOAD_CATEGORIES and ingest_skip is SKIP_CATEGORIES
    assert set(storage.STORAGE_REASONS) <= set(BATCH_CATEGORIES)


def test_every_registered_category_is_documented() -> None:
    def documented(doc: str) -> set[str]:
        return set(re.findall(r"`([a-z_-]+)`", (ROOT / "docs" / doc).read_text(encoding="utf-8")))

    ingest_doc = documented("ingest.md")
    missing = {c for c in (*LOAD_CATEGORIES, *SKIP_CATEGORIES) if c not in ingest_doc}
    assert not missing, f"not in docs/ingest.md: {sorted(missing)}"
    missing = set(BATCH_CATEGORIES) - documented("batch.md")
    assert not missing, f"not in docs/batch.md: {sorted(missing)}"
