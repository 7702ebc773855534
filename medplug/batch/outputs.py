"""The files a batch leaves in its output folder.

``results.jsonl`` (one line per study), ``summary.csv`` (one row per study),
``summary.json`` (the run's totals: studies done and failed, network retries),
``sr/<study>.dcm``, ``pm/<study>-<plugin>.dcm`` (heatmap as a Parametric Map) or
``sc/<study>-<plugin>.dcm`` (as a Secondary Capture), ``seg/<study>-<plugin>.dcm``
(a plugin's segmentation) and ``fhir/<study>.json`` (a FHIR R4 DiagnosticReport,
see ``medplug.fhir``); the DICOM objects are built by ``medplug.dicom_out``.
DICOM and FHIR files are written to a temporary name and renamed, so a killed
run never leaves half a file; the JSONL is rewritten from the journal on start
and end, so it always holds each finished study exactly once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from medplug.safe_paths import inside

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.csv"
RUN_SUMMARY_NAME = "summary.json"
SUMMARY_COLUMNS = [
    "study", "status", "plugin", "label", "probability", "reason", "total_s", "retries",
]  # fmt: skip


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Write ``path`` under a temporary name, renamed when done; removed if writing fails.

    A disk that fills up mid-write must not keep the half file (nor lose the old one).
    """
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class OutputFolder:
    """Paths and atomic writers for one batch's output folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.results = self.root / RESULTS_NAME
        self.summary = self.root / SUMMARY_NAME
        self.run_summary = self.root / RUN_SUMMARY_NAME

    def sr_path(self, study: str) -> Path:
        # ``study`` is a keyed hash, never a received UID; checked all the same.
        return inside(self.root / "sr", f"{study}.dcm")

    def sc_path(self, study: str, plugin: str) -> Path:
        return inside(self.root / "sc", f"{study}-{plugin}.dcm")

    def pm_path(self, study: str, plugin: str) -> Path:
        return inside(self.root / "pm", f"{study}-{plugin}.dcm")

    def seg_path(self, study: str, plugin: str) -> Path:
        return inside(self.root / "seg", f"{study}-{plugin}.dcm")

    def fhir_path(self, study: str) -> Path:
        return self.root / "fhir" / f"{study}.json"

    def write_json(self, document: dict[str, Any], path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(path) as partial:
            partial.write_text(json.dumps(document, indent=1), encoding="utf-8")
        return path

    def write_dicom(self, dataset: Dataset, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _replacing(path) as partial:
            dataset.save_as(partial, enforce_file_format=True)
        return path

    def rewrite_results(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace ``results.jsonl`` with exactly ``records`` (atomic)."""
        with _replacing(self.results) as partial, partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def append_results(self, records: Iterable[dict[str, Any]]) -> None:
        """Add finished studies' lines (not synced: the journal is the truth, see above)."""
        with self.results.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records)

    def write_summary(self, records: Iterable[dict[str, Any]]) -> None:
        """One CSV row per study and plugin (errors get one row with the reason)."""
        with (
            _replacing(self.summary) as partial,
            partial.open("w", newline="", encoding="utf-8") as handle,
        ):
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            for record in records:
                writer.writerows(summary_rows(record))

    def write_run_summary(self, totals: dict[str, Any]) -> None:
        """``summary.json``: the run's totals (see ``runner.RunSummary``)."""
        with _replacing(self.run_summary) as partial:
            partial.write_text(json.dumps(totals, indent=2, sort_keys=True) + "\n")


def summary_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    base = {
        "study": record["study"],
        "status": record["status"],
        "total_s": round(record.get("timing", {}).get("total_s", 0.0), 3),
        "retries": record.get("provenance", {}).get("network_retries", 0),
    }
    rows = []
    for result in record.get("results", []):
        prediction = result["prediction"]
        label = prediction.get("label")
        probability = prediction.get("probabilities", {}).get(label) if label else None
        rows.append(base | {"plugin": result["plugin"], "label": label, "probability": probability})
    for error in record.get("errors", []):
        rows.append(
            base
            | {
                "plugin": error.get("plugin") or "",
                "reason": f"{error['stage']}: {error['reason']}",
            }
        )
    return rows
