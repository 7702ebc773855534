"""``make viewer``: the held-out sample cohort and its batch results, open in OHIF.

Starts a private Orthanc (DICOMweb) on 127.0.0.1, loads the cohort's DICOM
studies, runs ``medplug batch`` with the demo models over that Orthanc (the SR
and heatmap objects are pushed back into each study, as next to a real PACS),
serves OHIF on the same origin, prints the URL and waits for Ctrl-C; then stops
everything and removes the temporary storage. Synthetic data, research use only.
"""

from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from medplug.ohif.install import OhifInstallError, ensure_ohif
from medplug.ohif.server import serve_ohif
from medplug.orthanc import OrthancServer, orthanc_available

DEMO_PLUGINS = ("image-classifier", "report-classifier", "fusion", "lesion-seg")


def dicom_files(cohort: Path) -> list[Path]:
    """Every file under the cases' DICOM folders listed in the cohort's manifest."""
    with (cohort / "manifest.csv").open(newline="") as handle:
        folders = [cohort / row["dicom_dir"] for row in csv.DictReader(handle)]
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


def run_batch(dicomweb: str, cohort: Path, models: Path, out: Path) -> int:
    """``medplug batch`` over the DICOMweb server with every demo model present."""
    plugins = [p for p in DEMO_PLUGINS if (models / p / "medplug.json").is_file()]
    if not plugins:
        raise SystemExit(f"error: no demo models in {models}; run `make demo` first")
    command = [sys.executable, "-m", "medplug.cli.main", "batch", dicomweb, "--out", str(out)]
    for plugin in plugins:
        command += ["--plugin", plugin, "--model", str(models / plugin)]
    command += ["--manifest", str(cohort / "manifest.csv")]
    return subprocess.run(command).returncode


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=Path("sample_data/holdout"))
    parser.add_argument("--models", type=Path, default=Path("sample_data/models"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/ohif"))
    parser.add_argument("--port", type=int, default=8765, help="OHIF's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if not orthanc_available():
        print("error: needs Debian's orthanc and orthanc-dicomweb (make system-packages)")
        return 2
    if not (args.cohort / "manifest.csv").is_file():
        print(f"error: no cohort at {args.cohort}; run `make demo` first")
        return 2
    try:
        dist = ensure_ohif(args.cache)
    except OhifInstallError as error:
        print(f"error: {error}")
        return 2
    with tempfile.TemporaryDirectory(prefix="medplug-viewer-") as work:
        with OrthancServer(Path(work) / "orthanc") as orthanc:
            files = dicom_files(args.cohort)
            print(f"Loading {len(files)} DICOM files of {args.cohort} into Orthanc ...")
            orthanc.upload(files)
            print("Running medplug batch over Orthanc (results are pushed into each study) ...")
            if run_batch(orthanc.dicomweb, args.cohort, args.models, Path(work) / "batch") != 0:
                print("warning: medplug batch reported failures (above); showing what it pushed")
            with serve_ohif(dist, orthanc.dicomweb, args.port) as ohif:
                print(f"\nOHIF is at {ohif.url}/  (Orthanc's DICOMweb at {ohif.url}/dicom-web)")
                print("Open a study, then its 'medplug' series. Ctrl-C stops everything.")
                wait_for_interrupt()
    print("Stopped OHIF and Orthanc.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
