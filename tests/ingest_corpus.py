"""Run every file of pydicom's test corpus (and pydicom-data) through scan and load.

Shared by tests/test_ingest_corpus.py and by regenerating the reviewed table:
``python tests/ingest_corpus.py > tests/data/pydicom_corpus_expected.json``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from pydicom.data import get_testdata_files

from medplug.errors import DicomError
from medplug.ingest import load_series, scan_folder


def corpus_files() -> dict[str, Path]:
    """Regular files keyed 'pydicom/<rel>' or 'pydicom-data/<rel>' (stable across machines)."""
    files = {}
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        parts = path.parts
        if "test_files" in parts:
            key = "pydicom/" + "/".join(parts[parts.index("test_files") + 1 :])
        else:
            key = "pydicom-data/" + "/".join(parts[parts.index("data_store") + 2 :])
        files[key] = path
    return dict(sorted(files.items()))


def outcome(path: Path) -> str:
    """'skip:<category>', 'error:<category>' or 'loaded:<shape>'; anything else is a crash."""
    scan = scan_folder(path)
    if scan.skipped:
        return f"skip:{scan.skipped[0].category}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume = load_series(scan.series[0])
    except DicomError as exc:
        return f"error:{exc.category}"
    return "loaded:" + "x".join(str(n) for n in volume.array.shape)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    table = {key: outcome(path) for key, path in corpus_files().items()}
    print(json.dumps(table, indent=1, sort_keys=True))
