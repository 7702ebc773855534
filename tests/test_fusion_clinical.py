"""Clinical preprocessing in numpy + JSON: same numbers as scikit-learn's pipeline,
and old ``clinical.skops`` model folders still load and upgrade."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2

from medplug.errors import ModelFileError
from medplug_fusion.clinical import (
    FILE_NAME,
    LEGACY_FILE_NAME,
    MISSING_CATEGORY,
    ClinicalPreprocessor,
    infer_field_kinds,
)

FIELDS = ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec"]


def records_with_gaps() -> list[dict]:
    frame = load_gbsg2().iloc[:200]
    records = [{k: row[k] for k in FIELDS} for _, row in frame.iterrows()]
    records[0]["age"] = None
    records[1]["tgrade"] = ""
    records[2]["tsize"] = "not a number"
    records[3] = {}
    records[4]["age"] = float("nan")
    return records


def sklearn_transformer(records, kinds):
    """The pipeline medplug used before (SimpleImputer + StandardScaler / OneHotEncoder)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps = []
    for name, kind in kinds.items():
        if kind == "numeric":
            pipe = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    ("scale", StandardScaler()),
                ]
            )
        else:
            pipe = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                    ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                ]
            )
        steps.append((name, pipe, [name]))
    transformer = ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)
    return transformer.fit(frame_of(records, kinds))


def frame_of(records, kinds):
    import pandas as pd

    pre = ClinicalPreprocessor(kinds)
    parsed = pre.parsed(records)
    return pd.DataFrame(
        {
            name: (
                pd.Series([np.nan if v is None else v for v in parsed[name]], dtype=float)
                if kind == "numeric"
                else pd.Series([np.nan if v is None else v for v in parsed[name]], dtype=object)
            )
            for name, kind in kinds.items()
        }
    )


@pytest.fixture(scope="module")
def kinds() -> dict[str, str]:
    return infer_field_kinds(load_gbsg2()[FIELDS])


def test_numpy_preprocessing_matches_scikit_learn(kinds) -> None:
    records = records_with_gaps()
    ours = ClinicalPreprocessor(kinds).fit(records)
    theirs = sklearn_transformer(records, kinds)
    new = records + [{"horTh": "unseen-category", "age": 50}, {"menostat": None}]
    expected = theirs.transform(frame_of(new, kinds)).astype(np.float32)
    np.testing.assert_allclose(ours.transform(new), expected, rtol=1e-6, atol=1e-6)
    for name in FIELDS:
        assert ours.field_slices()[name] == theirs.output_indices_[name]


def test_json_round_trip_and_no_code(tmp_path, kinds) -> None:
    records = records_with_gaps()
    fitted = ClinicalPreprocessor(kinds).fit(records)
    fitted.save(tmp_path)
    payload = json.loads((tmp_path / FILE_NAME).read_text())
    assert set(payload["params"]) == set(FIELDS)
    assert all(math.isfinite(p["scale"]) for p in payload["params"].values() if "scale" in p)
    loaded = ClinicalPreprocessor.load(tmp_path, kinds)
    np.testing.assert_array_equal(loaded.transform(records), fitted.transform(records))


def test_legacy_skops_folder_loads_with_the_same_numbers(tmp_path, kinds) -> None:
    skops_io = pytest.importorskip("skops.io")
    records = records_with_gaps()
    transformer = sklearn_transformer(records, kinds)
    skops_io.dump(transformer, tmp_path / LEGACY_FILE_NAME)
    loaded = ClinicalPreprocessor.load(tmp_path, kinds)
    expected = transformer.transform(frame_of(records, kinds)).astype(np.float32)
    np.testing.assert_allclose(loaded.transform(records), expected, rtol=1e-6, atol=1e-6)


def test_unreadable_json_is_a_model_file_error(tmp_path, kinds) -> None:
    (tmp_path / FILE_NAME).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="clinical.json"):
        ClinicalPreprocessor.load(tmp_path, kinds)
