"""Reading a fusion manifest CSV into ``Case`` objects and training targets.

Columns: ``case_id``; the image as ``image_path``, ``dicom_dir`` or ``nifti``
(a DICOM folder/file or a NIfTI file, relative to the manifest's folder); the
report as ``report_text`` or ``report_path``; ``label`` (or ``label_name``)
for classification, ``duration`` and ``event`` for survival; every other
column is a clinical field unless the config lists the fields explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medplug.contract import Case
from medplug.errors import DataError, MedplugError

IMAGE_COLUMNS = ("image_path", "dicom_dir", "nifti")
REPORT_COLUMNS = ("report_text", "report_path")
RESERVED = {
    "case_id",
    "label",
    "label_name",
    "duration",
    "event",
    "lesion_mask",
    "study_uid",
    "series_uid",
    "accession",
    *IMAGE_COLUMNS,
    *REPORT_COLUMNS,
}


@dataclass
class ManifestData:
    cases: list[Case]
    labels: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)
    durations: np.ndarray | None = None
    events: np.ndarray | None = None
    clinical_columns: list[str] = field(default_factory=list)
    load_warnings: dict[str, str] = field(default_factory=dict)  # case id -> reason


def read_manifest(
    path: str | Path,
    clinical_fields: list[str] | None = None,
    task: str = "classification",
    image_columns: tuple[str, ...] = IMAGE_COLUMNS,
) -> ManifestData:
    """Cases with their images read through ``medplug.ingest``; unreadable images
    become a missing image (recorded in ``load_warnings``), never a crash."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "case_id" not in frame.columns:
        raise DataError(f"{path}: manifest needs a case_id column")
    if frame["case_id"].duplicated().any():
        raise DataError(f"{path}: duplicate case_id values")
    root = path.parent
    columns = clinical_fields or [c for c in frame.columns if c not in RESERVED]
    missing_columns = [c for c in columns if c not in frame.columns]
    if missing_columns:
        raise DataError(f"{path}: clinical column(s) {missing_columns} not in the manifest")
    data = ManifestData(cases=[], clinical_columns=list(columns))
    for _, row in frame.iterrows():
        case_id = str(row["case_id"])
        case = Case(case_id=case_id, report=_report(row, root, case_id))
        case.clinical = {c: (row[c] if row[c].strip() else None) for c in columns}
        image_path = next((row[c] for c in image_columns if c in row and row[c].strip()), None)
        if image_path:
            try:
                case.images = [_load_image(root / image_path)]
            except MedplugError as exc:
                data.load_warnings[case_id] = f"image unreadable ({type(exc).__name__})"
        data.cases.append(case)
    if task == "survival":
        for column in ("duration", "event"):
            if column not in frame.columns:
                raise DataError(f"{path}: survival manifest needs a {column} column")
        data.durations = _numbers(frame["duration"], path, "duration")
        data.events = _numbers(frame["event"], path, "event")
    elif "label" in frame.columns:
        data.labels = _numbers(frame["label"], path, "label").astype(int)
        if "label_name" in frame.columns:
            names = dict(zip(data.labels, frame["label_name"], strict=True))
            data.label_names = [names.get(i, str(i)) for i in range(int(data.labels.max()) + 1)]
    elif "label_name" in frame.columns:
        data.label_names = sorted(frame["label_name"].unique())
        data.labels = frame["label_name"].map(data.label_names.index).to_numpy()
    else:
        raise DataError(f"{path}: classification manifest needs a label or label_name column")
    return data


def _report(row: pd.Series, root: Path, case_id: str) -> str | None:
    if "report_text" in row and row["report_text"].strip():
        return str(row["report_text"])
    if "report_path" in row and row["report_path"].strip():
        report_file = root / row["report_path"]
        if not report_file.is_file():
            return None
        return report_file.read_text(encoding="utf-8", errors="replace")
    return None


def _load_image(path: Path):  # -> ImageVolume
    from medplug.ingest import load_image  # lands with the ingest area

    return load_image(path)


def _numbers(column: pd.Series, path: Path, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    if values.isna().any():
        rows = values.index[values.isna()].tolist()[:5]
        raise DataError(f"{path}: column {name!r} is not numeric in rows {rows}")
    return values.to_numpy(dtype=np.float64)
