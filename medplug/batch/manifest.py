"""The optional manifest: report text and clinical fields for studies, keyed by UID or accession.

A CSV with a ``study_uid`` and/or ``accession`` column, a ``report_text``
(or ``report``) column and clinical columns. The sample cohort's own
``manifest.csv`` is a valid manifest. Columns that would leak the answer or
are file paths (``label``, ``case_id``, ``*_path``...) are never passed as
clinical fields; if plugins declare their tabular fields, only those are.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from medplug.contract import ClinicalValue
from medplug.errors import DataError

KEY_COLUMNS = ("study_uid", "accession")
REPORT_COLUMNS = ("report_text", "report")
NOT_CLINICAL = {
    "case_id", "label", "label_name", "dicom_dir", "nifti", "lesion_mask", "report_path",
    "series_uid", "patient_id", "patient_name",
}  # fmt: skip


@dataclass
class ManifestEntry:
    report: str | None = None
    clinical: dict[str, ClinicalValue] = field(default_factory=dict)


def _value(text: str) -> ClinicalValue:
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


class Manifest:
    """Lookup of report and clinical fields by study UID, then by accession number."""

    def __init__(self, entries_by_key: dict[tuple[str, str], ManifestEntry]) -> None:
        self._entries = entries_by_key

    @classmethod
    def empty(cls) -> Manifest:
        return cls({})

    @classmethod
    def read(cls, path: Path, clinical_fields: list[str] | None = None) -> Manifest:
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
                columns = list(rows[0].keys()) if rows else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"manifest {path}: cannot be read ({exc})") from exc
        if not any(key in columns for key in KEY_COLUMNS):
            raise DataError(f"manifest {path}: needs a 'study_uid' or 'accession' column")
        report_column = next((c for c in REPORT_COLUMNS if c in columns), None)
        fields = clinical_fields or [
            c
            for c in columns
            if c not in NOT_CLINICAL and c not in KEY_COLUMNS and c not in REPORT_COLUMNS
        ]
        entries: dict[tuple[str, str], ManifestEntry] = {}
        for row in rows:
            report = (row.get(report_column) or "").strip() if report_column else ""
            entry = ManifestEntry(
                report=report or None,
                clinical={name: _value(row.get(name) or "") for name in fields if name in row},
            )
            for key in KEY_COLUMNS:
                if (row.get(key) or "").strip():
                    entries[(key, row[key].strip())] = entry
        return cls(entries)

    def lookup(self, study_uid: str, accession: str | None) -> ManifestEntry:
        entry = self._entries.get(("study_uid", study_uid))
        if entry is None and accession:
            entry = self._entries.get(("accession", accession))
        return entry or ManifestEntry()
