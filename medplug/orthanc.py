"""A private Orthanc (with DICOMweb) on 127.0.0.1: for the tests and ``make viewer``.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages are run with a temporary
configuration on free ports, with remote access refused, storage in a folder of
the caller's, and stopped by the caller. Standard library only (``urllib``), so
``medplug`` needs no extra HTTP client for it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_FOLDER = "/usr/share/orthanc/plugins"
DICOMWEB_PLUGIN = f"{PLUGIN_FOLDER}/libOrthancDicomWeb.so"


def orthanc_available() -> bool:
    """Whether the Orthanc binary and its DICOMweb plugin are installed."""
    return Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str | None:
    """A system DICOM tool by absolute path (pynetdicom's scripts shadow dcmtk's on PATH)."""
    for candidate in (f"/usr/bin/{name}", f"/usr/sbin/{name}"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name) if name not in ("storescu", "findscu") else None


class OrthancServer:
    """A private Orthanc on 127.0.0.1 with free ports, a temporary config and storage."""

    def __init__(self, root: Path, aet: str = "ORTHANC", modalities: dict | None = None) -> None:
        self.root = root
        self.http_port, self.dicom_port, self.aet = free_port(), free_port(), aet
        config = {
            "Name": "medplug-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": modalities or {},
            "HttpTimeout": 30,
        }
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 60) -> OrthancServer:
        log = (self.root / "orthanc.log").open("w")
        self.process = subprocess.Popen(
            [ORTHANC, str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited early; see {self.root / 'orthanc.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/system", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("Orthanc did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)

    def __enter__(self) -> OrthancServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def store_folder(self, folder: Path, calling_aet: str = "LOADER") -> None:
        """Load a folder of DICOM files with dcmtk's storescu (by absolute path)."""
        subprocess.run(
            [tool("storescu") or "/usr/bin/storescu", "-aet", calling_aet, "-aec", self.aet,
             "+sd", "+r", "-nh", "-R", "-q",
             "127.0.0.1", str(self.dicom_port), str(folder)],
            check=True, capture_output=True,
        )  # fmt: skip

    def upload(self, paths: list[Path]) -> int:
        """POST each DICOM file to the REST API (stored as is); returns how many."""
        for path in paths:
            request = urllib.request.Request(
                f"{self.url}/instances", data=Path(path).read_bytes(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        return len(paths)

    def get(self, path: str) -> Any:
        """GET a JSON resource of the REST or DICOMweb API (raises on HTTP errors)."""
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def series_of_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the series of one study, as DICOM JSON."""
        return self.get(f"/dicom-web/studies/{study_uid}/series")
