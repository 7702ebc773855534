"""Labelled report CSVs: read, check, and split, naming rows but never their text."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from medplug.errors import DataError


@dataclass
class LabelledReports:
    """Report texts with their raw label values (as strings) and CSV row numbers."""

    texts: list[str]
    labels: list[str]
    rows: list[int]
    skipped_rows: list[int]

    def label_values(self) -> list[str]:
        """Distinct labels in a stable order: numeric order when all are numbers."""
        values = set(self.labels)
        try:
            return sorted(values, key=float)
        except ValueError:
            return sorted(values)


def read_labelled_csv(path: str | Path, text_col: str, label_col: str | None) -> LabelledReports:
    """Rows with non-empty text (and label, if ``label_col``); others are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in (text_col, label_col):
            if column is not None and column not in columns:
                raise DataError(f"{path}: no column {column!r} (columns: {', '.join(columns)})")
        data = LabelledReports([], [], [], [])
        for row_number, row in enumerate(reader, start=2):  # row 1 is the header
            text = (row.get(text_col) or "").strip()
            label = (row.get(label_col) or "").strip() if label_col else ""
            if not text or (label_col and not label):
                data.skipped_rows.append(row_number)
                continue
            data.texts.append(text)
            data.labels.append(label)
            data.rows.append(row_number)
    if not data.texts:
        raise DataError(f"{path}: no rows with both {text_col!r} and {label_col!r} filled")
    return data


def stratified_split(
    labels: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices for training and validation, each class split in the same proportion."""
    rng = random.Random(seed)
    train, val = [], []
    for value in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == value]
        rng.shuffle(members)
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    if not val or len(set(labels[i] for i in val)) < 2:
        raise DataError(
            "too few reports per label to hold some out for validation and calibration "
            f"(label counts: { {v: labels.count(v) for v in sorted(set(labels))} })"
        )
    return sorted(train), sorted(val)
