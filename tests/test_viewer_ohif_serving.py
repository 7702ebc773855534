"""OHIF's install check and its one-origin server, without a browser (fast)."""

from __future__ import annotations

import http.client
import io
import json
import os
import stat
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medplug.ohif.install import (
    MARKER,
    OHIF_INTEGRITY,
    OHIF_VERSION,
    OhifInstallError,
    ensure_ohif,
    installed_dist,
    sri_sha512,
)
from medplug.ohif.server import serve_ohif
from medplug.orthanc import free_port


def fake_npm(folder: Path, files: dict[str, bytes]) -> Path:
    """An ``npm`` whose ``pack`` writes a tarball of ``files`` (a registry we control)."""
    tarball = folder / "built.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    script = folder / "npm"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$prev" in --pack-destination) dest="$a";; esac; prev="$a"; done\n'
        f'cp {tarball} "$dest/ohif-app.tgz"\n'
        'echo \'[{"filename": "ohif-app.tgz"}]\'\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_tarball_that_is_not_the_pinned_build_is_refused(tmp_path: Path) -> None:
    npm = fake_npm(tmp_path, {"package/dist/index.html": b"<html>not OHIF</html>"})
    cache = tmp_path / "cache"
    with pytest.raises(OhifInstallError, match="does not match the pinned integrity"):
        ensure_ohif(cache, npm=str(npm))
    assert installed_dist(cache) is None
    assert not (cache / OHIF_VERSION).exists()  # nothing half-installed is left to reuse
    assert sri_sha512(tmp_path / "built.tgz") != OHIF_INTEGRITY


def test_a_failing_npm_is_a_clear_error(tmp_path: Path) -> None:
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    npm.chmod(0o755)
    with pytest.raises(OhifInstallError, match="npm pack @ohif/app@.* failed: npm error 404"):
        ensure_ohif(tmp_path / "cache", npm=str(npm))


def test_only_a_finished_install_with_the_pinned_integrity_counts(tmp_path: Path) -> None:
    dist = tmp_path / OHIF_VERSION / "dist"
    dist.mkdir(parents=True)
    (dist / "index.html").write_text("<html></html>")
    assert installed_dist(tmp_path) is None  # no marker: an interrupted install
    (tmp_path / OHIF_VERSION / MARKER).write_text(json.dumps({"integrity": "sha512-other"}))
    assert installed_dist(tmp_path) is None
    (tmp_path / OHIF_VERSION / MARKER).write_text(json.dumps({"integrity": OHIF_INTEGRITY}))
    assert installed_dist(tmp_path) == dist


class Upstream(BaseHTTPRequestHandler):
    """A stand-in DICOMweb root that echoes what it was asked."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "accept": self.headers.get("Accept")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<html>OHIF</html>")
    (tmp_path / "dist" / "codec.wasm").write_bytes(b"\0asm")
    return tmp_path / "dist"


def test_one_origin_serves_ohif_its_config_and_the_dicomweb_root(dist: Path, upstream: str):
    with serve_ohif(dist, upstream) as ohif:
        assert ohif.url.startswith("http://127.0.0.1:")
        status, headers, body = get(ohif.url, "/viewer?StudyInstanceUIDs=1.2.3")
        assert (status, body) == (200, b"<html>OHIF</html>")  # OHIF's router reads the URL
        assert headers["cross-origin-opener-policy"] == "same-origin"
        status, headers, body = get(ohif.url, "/codec.wasm")
        assert headers["content-type"] == "application/wasm"  # streaming compile needs it
        status, headers, body = get(ohif.url, "/app-config.js")
        config = body.decode()
        assert "window.location.origin + '/dicom-web'" in config
        assert "@ohif/extension-default.dataSourcesModule.dicomweb" in config
        path = "/dicom-web/studies/1.2.3/series?limit=5"
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        status, headers, body = get(ohif.url, path, {"Accept": accept})
        assert status == 200 and headers["content-type"] == "application/dicom+json"
        assert json.loads(body) == {"path": path, "accept": accept}


def test_an_unreachable_dicomweb_server_is_a_502(dist: Path) -> None:
    with serve_ohif(dist, f"http://127.0.0.1:{free_port()}/dicom-web") as ohif:
        status, _, _ = get(ohif.url, "/dicom-web/studies")
        assert status == 502


def test_files_outside_dist_are_not_served(dist: Path, upstream: str) -> None:
    (dist.parent / "secret.txt").write_text("no")
    with serve_ohif(dist, upstream) as ohif:
        status, _, body = get(ohif.url, "/../secret.txt")
        assert body != b"no"
        status, _, body = get(ohif.url, "/%2e%2e/secret.txt")
        assert body != b"no"
    assert os.path.exists(dist.parent / "secret.txt")
