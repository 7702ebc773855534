"""Clinical-field preprocessing: a scikit-learn ``ColumnTransformer`` saved without pickle.

One transformer per field (median imputation + scaling for numbers, constant
imputation + one-hot for categories, unseen categories ignored), so
``output_indices_`` tells which output columns belong to which field: the
per-field attributions mask a field by swapping in its "missing" columns.
The fitted transformer is stored with skops, whose loader only rebuilds
scikit-learn/numpy types it trusts and never unpickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medplug.errors import DataError, ModelFileError

MISSING_CATEGORY = "__missing__"
FILE_NAME = "clinical.skops"
# Types skops does not trust by default but which are plain data, not code.
SAFE_EXTRA_TYPES = frozenset({"numpy.dtype"})


def infer_field_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """``numeric`` when every present value parses as a number, else ``categorical``."""
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
        self.transformer: ColumnTransformer | None = None

    @property
    def fields(self) -> list[str]:
        return list(self.field_kinds)

    @property
    def n_features(self) -> int:
        self._require_fitted()
        assert self.transformer is not None
        return int(max(s.stop for s in self.transformer.output_indices_.values()))

    def frame(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Records as a typed DataFrame: numbers as float, categories as str, gaps as NaN."""
        columns = {}
        for name, kind in self.field_kinds.items():
            values = [record.get(name) for record in records]
            if kind == "numeric":
                columns[name] = pd.to_numeric(
                    pd.Series([_blank_to_none(v) for v in values], dtype=object), errors="coerce"
                ).astype(float)
            else:
                columns[name] = pd.Series(
                    [np.nan if _blank_to_none(v) is None else str(v) for v in values], dtype=object
                )
        return pd.DataFrame(columns, index=range(len(records)))

    def unparsable_fields(self, record: Mapping[str, Any]) -> list[str]:
        """Numeric fields whose value is present but not a number (they become missing)."""
        bad = []
        for name, kind in self.field_kinds.items():
            value = _blank_to_none(record.get(name))
            if kind == "numeric" and value is not None:
                try:
                    float(value)
                except (TypeError, ValueError):
                    bad.append(name)
        return bad

    def fit(self, records: Sequence[Mapping[str, Any]]) -> ClinicalPreprocessor:
        if not records:
            raise DataError("cannot fit clinical preprocessing on zero cases")
        steps = []
        for name, kind in self.field_kinds.items():
            if kind == "numeric":
                pipeline = Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                )
            else:
                pipeline = Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                )
            steps.append((name, pipeline, [name]))
        self.transformer = ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)
        self.transformer.fit(self.frame(records))
        return self

    def transform(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        self._require_fitted()
        assert self.transformer is not None
        if not records:
            return np.zeros((0, self.n_features), dtype=np.float32)
        return np.asarray(self.transformer.transform(self.frame(records)), dtype=np.float32)

    def field_slices(self) -> dict[str, slice]:
        """Output columns of each field (for per-field masking)."""
        self._require_fitted()
        assert self.transformer is not None
        return {name: self.transformer.output_indices_[name] for name in self.fields}

    def missing_row(self) -> np.ndarray:
        """What a case with every field missing looks like after preprocessing."""
        return self.transform([{}])[0]

    # ------------------------------------------------------------------ persistence

    def save(self, folder: Path) -> str:
        import skops.io as sio

        self._require_fitted()
        sio.dump(self.transformer, Path(folder) / FILE_NAME)
        return FILE_NAME

    @classmethod
    def load(cls, folder: Path, field_kinds: Mapping[str, str]) -> ClinicalPreprocessor:
        import skops.io as sio

        path = Path(folder) / FILE_NAME
        if not path.is_file():
            raise ModelFileError(f"{folder}: no {FILE_NAME}")
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - SAFE_EXTRA_TYPES)
        if refused:
            raise ModelFileError(f"{path}: holds types medplug does not load: {refused}")
        preprocessor = cls(field_kinds)
        preprocessor.transformer = sio.load(path, trusted=list(untrusted))
        return preprocessor

    def _require_fitted(self) -> None:
        if self.transformer is None:
            raise DataError("clinical preprocessing used before fit")


def _blank_to_none(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value
