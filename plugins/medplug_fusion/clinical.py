"""Clinical-field preprocessing, fitted and applied with numpy, stored as plain JSON.

One block of output columns per field: numbers are median-imputed then
standardised (one column), categories are one-hot encoded over the categories
seen in training plus ``__missing__`` (unseen categories give all zeros). The
per-field attributions mask a field by swapping in its "missing" columns, so
``field_slices`` says which columns belong to which field.

The fitted parameters (medians, means, scales, categories) are written to
``clinical.json``: data, not code, so loading it can never execute anything
and needs neither scikit-learn nor skops at run time. The arithmetic matches
scikit-learn's ``SimpleImputer`` + ``StandardScaler`` / ``OneHotEncoder``
(checked in tests). Model folders from before this change hold
``clinical.skops``; they still load when skops is installed, and
``python -m medplug_fusion.upgrade FOLDER`` rewrites them to ``clinical.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medplug.errors import DataError, ModelFileError

MISSING_CATEGORY = "__missing__"
FILE_NAME = "clinical.json"
LEGACY_FILE_NAME = "clinical.skops"
FORMAT_VERSION = 1
# Types skops does not trust by default but which are plain data, not code.
SAFE_EXTRA_TYPES = frozenset({"numpy.dtype"})
_log = logging.getLogger(__name__)


def infer_field_kinds(frame: Any) -> dict[str, str]:
    """``numeric`` when every present value of a DataFrame column parses as a number."""
    import pandas as pd  # training only

    kinds = {}
    for column in frame.columns:
        present = frame[column].dropna()
        numeric = pd.to_numeric(present, errors="coerce")
        kinds[str(column)] = "numeric" if numeric.notna().all() else "categorical"
    return kinds


class ClinicalPreprocessor:
    """Turns clinical-field dicts into a fixed-width float matrix, tolerating gaps."""

    def __init__(self, field_kinds: Mapping[str, str]) -> None:
        self.field_kinds = dict(field_kinds)
        # Per field: {"median", "mean", "scale"} (numeric) or {"categories"} (categorical).
        self.params: dict[str, dict[str, Any]] | None = None

    @property
    def fields(self) -> list[str]:
        return list(self.field_kinds)

    @property
    def fitted(self) -> bool:
        return self.params is not None

    @property
    def n_features(self) -> int:
        return max((s.stop for s in self.field_slices().values()), default=0)

    # ------------------------------------------------------------------ parsing

    def parsed(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Per field, each record's value: float or None (numeric), str or None (categorical)."""
        columns: dict[str, list[Any]] = {}
        for name, kind in self.field_kinds.items():
            values = [_blank_to_none(record.get(name)) for record in records]
            if kind == "numeric":
                columns[name] = [_to_float(v) for v in values]
            else:
                columns[name] = [None if v is None else str(v) for v in values]
        return columns

    def missing_mask(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(cases, fields) True where a field is absent or unusable (e.g. not a number)."""
        columns = self.parsed(records)
        mask = np.zeros((len(records), len(self.field_kinds)), dtype=bool)
        for j, name in enumerate(self.field_kinds):
            mask[:, j] = [value is None for value in columns[name]]
        return mask

    def unparsable_fields(self, record: Mapping[str, Any]) -> list[str]:
        """Numeric fields whose value is present but not a number (they become missing)."""
        bad = []
        for name, kind in self.field_kinds.items():
            value = _blank_to_none(record.get(name))
            if kind == "numeric" and value is not None and _to_float(value) is None:
                bad.append(name)
        return bad

    # ------------------------------------------------------------------ fit / transform

    def fit(self, records: Sequence[Mapping[str, Any]]) -> ClinicalPreprocessor:
        if not records:
            raise DataError("cannot fit clinical preprocessing on zero cases")
        columns = self.parsed(records)
        params: dict[str, dict[str, Any]] = {}
        for name, kind in self.field_kinds.items():
            if kind == "numeric":
                present = np.array([v for v in columns[name] if v is not None], dtype=np.float64)
                # An all-missing field imputes 0 (scikit-learn's keep_empty_features).
                median = float(np.median(present)) if present.size else 0.0
                filled = np.array(
                    [median if v is None else v for v in columns[name]], dtype=np.float64
                )
                std = float(filled.std())
                params[name] = {
                    "median": median,
                    "mean": float(filled.mean()),
                    "scale": std if std > 10 * np.finfo(np.float64).eps else 1.0,
                }
            else:
                seen = {MISSING_CATEGORY if v is None else v for v in columns[name]}
                params[name] = {"categories": sorted(seen)}
        self.params = params
        return self

    def transform(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        params = self._require_fitted()
        slices = self.field_slices()
        out = np.zeros((len(records), self.n_features), dtype=np.float64)
        if not records:
            return out.astype(np.float32)
        columns = self.parsed(records)
        for name, kind in self.field_kinds.items():
            p, block = params[name], slices[name]
            if kind == "numeric":
                values = np.array(
                    [p["median"] if v is None else v for v in columns[name]], dtype=np.float64
                )
                out[:, block.start] = (values - p["mean"]) / p["scale"]
            else:
                index = {category: i for i, category in enumerate(p["categories"])}
                for row, value in enumerate(columns[name]):
                    column = index.get(MISSING_CATEGORY if value is None else value)
                    if column is not None:  # unseen categories: all zeros
                        out[row, block.start + column] = 1.0
        return out.astype(np.float32)

    def field_slices(self) -> dict[str, slice]:
        """Output columns of each field (for per-field masking)."""
        params = self._require_fitted()
        slices, start = {}, 0
        for name, kind in self.field_kinds.items():
            width = 1 if kind == "numeric" else len(params[name]["categories"])
            slices[name] = slice(start, start + width)
            start += width
        return slices

    def known_categories(self) -> dict[str, set[str]]:
        params = self._require_fitted()
        return {
            name: set(params[name]["categories"])
            for name, kind in self.field_kinds.items()
            if kind == "categorical"
        }

    def missing_row(self) -> np.ndarray:
        """What a case with every field missing looks like after preprocessing."""
        return self.transform([{}])[0]

    # ------------------------------------------------------------------ persistence

    def save(self, folder: Path) -> str:
        params = self._require_fitted()
        payload = {"format": FORMAT_VERSION, "field_kinds": self.field_kinds, "params": params}
        (Path(folder) / FILE_NAME).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        return FILE_NAME

    @classmethod
    def load(cls, folder: Path, field_kinds: Mapping[str, str]) -> ClinicalPreprocessor:
        folder = Path(folder)
        path = folder / FILE_NAME
        if not path.is_file():
            if (folder / LEGACY_FILE_NAME).is_file():
                return cls.load_legacy(folder, field_kinds)
            raise ModelFileError(f"{folder}: no {FILE_NAME}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            params = payload["params"]
            missing = [name for name in field_kinds if name not in params]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{path}: not a medplug clinical preprocessing file") from exc
        if payload.get("format") != FORMAT_VERSION or missing:
            raise ModelFileError(
                f"{path}: format {payload.get('format')!r} or fields {missing} do not match "
                f"this medplug (format {FORMAT_VERSION})"
            )
        preprocessor = cls(field_kinds)
        preprocessor.params = {name: params[name] for name in field_kinds}
        return preprocessor

    @classmethod
    def load_legacy(cls, folder: Path, field_kinds: Mapping[str, str]) -> ClinicalPreprocessor:
        """Read a pre-JSON ``clinical.skops`` (needs skops) and keep only its parameters."""
        path = Path(folder) / LEGACY_FILE_NAME
        try:
            import skops.io as sio
        except ImportError:
            raise ModelFileError(
                f"{path}: this model folder stores clinical preprocessing in the old skops "
                "format; install skops once (`pip install skops`) and run "
                f"`python -m medplug_fusion.upgrade {folder}` to rewrite it as clinical.json"
            ) from None
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - SAFE_EXTRA_TYPES)
        if refused:
            raise ModelFileError(f"{path}: holds types medplug does not load: {refused}")
        transformer = sio.load(path, trusted=list(untrusted))
        _log.warning(
            "%s: old skops format; run `python -m medplug_fusion.upgrade %s` to drop skops",
            path,
            folder,
        )
        return cls.from_sklearn(transformer, field_kinds)

    @classmethod
    def from_sklearn(cls, transformer: Any, field_kinds: Mapping[str, str]) -> ClinicalPreprocessor:
        """Parameters of a fitted scikit-learn ``ColumnTransformer`` of medplug's old layout."""
        params: dict[str, dict[str, Any]] = {}
        for name, kind in field_kinds.items():
            steps = transformer.named_transformers_[name].named_steps
            if kind == "numeric":
                params[name] = {
                    "median": float(steps["impute"].statistics_[0]),
                    "mean": float(steps["scale"].mean_[0]),
                    "scale": float(steps["scale"].scale_[0]),
                }
            else:
                params[name] = {"categories": [str(c) for c in steps["onehot"].categories_[0]]}
        preprocessor = cls(field_kinds)
        preprocessor.params = params
        return preprocessor

    def _require_fitted(self) -> dict[str, dict[str, Any]]:
        if self.params is None:
            raise DataError("clinical preprocessing used before fit")
        return self.params


def _blank_to_none(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _to_float(value: Any) -> float | None:
    """A number, or None when absent or not parseable (as pandas' ``to_numeric(coerce)``)."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
