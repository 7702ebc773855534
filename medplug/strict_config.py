"""Build a config dataclass from a dict, refusing keys it does not know.

Model configs come from users' JSON files and from model folders; a misspelt
key silently falling back to a default would train or load the wrong model.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from medplug.errors import DataError

ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], data: dict[str, Any], what: str) -> ConfigT:
    """``cls(**data)`` after checking every key is a field of ``cls``; ``what`` names it."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return cls(**data)
