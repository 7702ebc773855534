"""``medplug serve`` against hostile clients: zip bombs that lie, stalls, paths.

The bomb test runs a real ``medplug serve`` process and measures its peak
resident memory (``VmHWM``, reset just before the upload) while it refuses
``tests/data/bzip2_bomb_2gib.zip``: 1.6 KB that declares 1 KiB but holds a
bzip2 stream of 2 GiB of zeros (see ``tests/hostile_zips.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from batch_support import free_port
from fastapi.testclient import TestClient
from hostile_zips import lying_bomb
from plugin_distribution import install_plugin_distribution
from viewer_support import phantom, write_dicom_series, write_nifti

from medplug.serve import ServeSettings, create_app
from medplug.serve.scrub import scrub_paths

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOMB = Path(__file__).parent / "data" / "bzip2_bomb_2gib.zip"
MIB = 1024**2

SOURCE_ECHO = '''
from medplug.contract import Case, InputSpec, Plugin, PluginInfo, Prediction


class SourceEcho(Plugin):
    """Reports where it read the image from, as the image plugin's provenance does."""

    name = "source-echo"

    def __init__(self):
        self.info = self.describe()

    @classmethod
    def describe(cls):
        return PluginInfo(name=cls.name, version="1", task="classification",
                          labels=["a", "b"],
                          inputs={"ct": InputSpec(kind="image", spatial_dims=3)})

    @classmethod
    def from_pretrained(cls, model_dir):
        return cls()

    def _predict(self, case: Case) -> Prediction:
        return Prediction(plugin=self.name, plugin_version="1", case_id=case.case_id,
                          label="a", probabilities={"a": 0.6, "b": 0.4},
                          warnings=[f"read {case.image.source}"],
                          provenance={"input_source": case.image.source,
                                      "nested": {"files": [case.image.source]}})
'''

SLOW_IMPORT = """
import time

time.sleep(6)  # a plugin whose import is as slow as torch's on a loaded machine

from medplug.contract import Plugin, PluginInfo


class SlowImport(Plugin):
    name = "slow-import"

    @classmethod
    def describe(cls):
        return PluginInfo(name=cls.name, version="1", task="classification", labels=["a"],
                          inputs={})

    @classmethod
    def from_pretrained(cls, model_dir):
        return cls()

    def _predict(self, case):
        raise NotImplementedError
"""


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin_distribution(
        tmp_path_factory.mktemp("echo"), "acme-source-echo", "acme_source_echo", SOURCE_ECHO,
        {"source-echo": "acme_source_echo:SourceEcho"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin_distribution(
        tmp_path_factory.mktemp("slow"), "acme-slow-import", "acme_slow_import", SLOW_IMPORT,
        {"slow-import": "acme_slow_import:SlowImport"},
    )  # fmt: skip


@contextmanager
def medplug_serve(
    tmp_path: Path, *args: str, site: Path | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real ``medplug serve`` process on a free loopback port; yields it and its URL."""
    port = free_port()
    env = dict(os.environ, MEDPLUG_SERVE_TOKEN=TOKEN, COLUMNS="200")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    (tmp_path / "models").mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "medplug.cli.main", "serve", "--port", str(port),
         "--models", str(tmp_path / "models"), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "medplug serve exited"
            try:
                httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "medplug serve did not start"
                time.sleep(0.1)
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_plugins(url: str) -> None:
    deadline = time.monotonic() + 180
    while httpx.get(f"{url}/health", timeout=10).json()["plugins"] == "loading":
        assert time.monotonic() < deadline, "plugin discovery did not finish"
        time.sleep(0.2)


def reset_peak_rss(pid: int) -> int:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; returns that, bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak_rss(pid)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# ----------------------------------------------------------------- zip bombs


def test_lying_bzip2_bomb_is_refused_by_a_real_server_within_bounded_memory(
    tmp_path: Path,
) -> None:
    with zipfile.ZipFile(BOMB) as archive:
        (info,) = archive.infolist()
    assert info.compress_type == zipfile.ZIP_BZIP2 and info.file_size == 1024
    assert BOMB.stat().st_size < 4096
    with medplug_serve(tmp_path) as (process, url):
        wait_for_plugins(url)  # discovery imports torch: not what is measured here
        before = reset_peak_rss(process.pid)
        response = httpx.post(
            f"{url}/predict/image-classifier",
            headers=AUTH,
            files={"files": ("study.zip", BOMB.read_bytes(), "application/zip")},
            timeout=120,
        )
        growth = peak_rss(process.pid) - before
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    print(f"bzip2 bomb: HTTP {response.status_code}, peak RSS growth {growth / MIB:.1f} MiB")
    assert response.status_code == 400, response.text
    assert (
        "bzip2" in response.json()["detail"] and "stored or deflated" in response.json()["detail"]
    )
    assert growth < 200 * MIB


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = ServeSettings(
        token=TOKEN,
        models_dir=tmp_path / "models",
        max_files=5,
        max_unzipped_bytes=64 * MIB,
        max_unzipped_entry_bytes=16 * MIB,
    )
    return TestClient(create_app(settings))


def post_zip(client: TestClient, data: bytes) -> httpx.Response:
    return client.post(
        "/predict/source-echo", headers=AUTH, files={"files": ("s.zip", data, "application/zip")}
    )


def test_lzma_entries_are_refused(client: TestClient, tmp_path: Path) -> None:
    bomb = lying_bomb(tmp_path / "lzma.zip", 64 * MIB, entries=2, method=zipfile.ZIP_LZMA)
    response = post_zip(client, bomb.read_bytes())
    assert response.status_code == 400
    assert "LZMA" in response.json()["detail"]


def test_deflate_lying_about_its_size_is_refused(client: TestClient, tmp_path: Path) -> None:
    small = lying_bomb(tmp_path / "d.zip", 8 * MIB, method=zipfile.ZIP_DEFLATED, declared=1024)
    response = post_zip(client, small.read_bytes())
    assert response.status_code == 400 and "corrupt" in response.json()["detail"]
    # Declaring more than it holds gets past the declared-size check; real bytes still count.
    big = lying_bomb(tmp_path / "e.zip", 40 * MIB, method=zipfile.ZIP_DEFLATED, declared=15 * MIB)
    response = post_zip(client, big.read_bytes())
    assert response.status_code == 400, response.text  # stops at 15 MiB: CRC/size mismatch


def test_per_entry_and_total_real_sizes_are_limited(client: TestClient, tmp_path: Path) -> None:
    one_big = lying_bomb(
        tmp_path / "a.zip", 20 * MIB, method=zipfile.ZIP_DEFLATED, declared=20 * MIB
    )
    response = post_zip(client, one_big.read_bytes())
    assert response.status_code == 413 and "per-file limit" in response.json()["detail"]
    # Five honest entries of 15 MiB each: under the per-file limit, 75 MiB over the total.
    many = lying_bomb(
        tmp_path / "b.zip", 15 * MIB, entries=5, method=zipfile.ZIP_DEFLATED, declared=15 * MIB
    )
    response = post_zip(client, many.read_bytes())
    assert response.status_code == 413 and "unpacks to more" in response.json()["detail"]


def test_entry_count_is_capped_before_parsing(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(40):  # folders and noise count too: 2 * 5 + 16 = 26 at most
            archive.writestr(f"__MACOSX/{index}", b"")
    response = post_zip(client, path.read_bytes())
    assert response.status_code == 413 and "entries" in response.json()["detail"]


# ----------------------------------------------------------------- no server paths


def test_no_server_path_in_provenance_or_warnings(
    echo_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(echo_site))
    (tmp_path / "models" / "source-echo").mkdir(parents=True)
    client = TestClient(create_app(ServeSettings(token=TOKEN, models_dir=tmp_path / "models")))
    nifti = write_nifti(tmp_path / "Doe_John.nii.gz", phantom())
    series = write_dicom_series(tmp_path / "ct", phantom())
    uploads = [
        {"files": ("Doe_John.nii.gz", nifti.read_bytes())},
        [("files", (p.name, p.read_bytes())) for p in sorted(series.iterdir())],
    ]
    for files in uploads:
        for output in ("json", "viewer"):
            response = client.post(
                f"/predict/source-echo?output={output}", headers=AUTH, files=files
            )
            assert response.status_code == 200, response.text
            body = response.text
            assert tempfile.gettempdir() not in body and str(tmp_path) not in body
            assert "Doe_John" not in body
            prediction = response.json()
            prediction = prediction.get("prediction", prediction)
            assert prediction["provenance"]["input_source"] == "upload"
            assert prediction["provenance"]["nested"]["files"] == ["upload"]


def test_error_messages_hide_server_paths() -> None:
    assert (
        scrub_paths("/srv/models/x: no model.safetensors") == "<server path>: no model.safetensors"
    )
    temp = f"{tempfile.gettempdir()}/medplug-serve-abc/input/00003.dcm: bad header"
    assert scrub_paths(temp) == "upload/00003.dcm: bad header"
    assert scrub_paths("expected 3 labels, got 2/3") == "expected 3 labels, got 2/3"


def test_plugin_names_from_the_url_are_checked(client: TestClient) -> None:
    response = client.post("/predict/..", headers=AUTH, files={"files": ("a.dcm", b"x" * 200)})
    assert response.status_code in (404, 405)
    response = client.post("/predict/.hidden", headers=AUTH, files={"files": ("a.dcm", b"x" * 200)})
    assert response.status_code == 404


# ----------------------------------------------------------------- event loop and binding


def test_health_answers_while_discovery_runs_and_default_bind_is_loopback(
    slow_site: Path, tmp_path: Path
) -> None:
    with medplug_serve(tmp_path, site=slow_site) as (process, url):
        listening = [
            conn.laddr
            for conn in psutil.Process(process.pid).net_connections()
            if conn.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        # The slow plugin's import sleeps 6 s in the discovery thread.
        assert httpx.get(f"{url}/health", timeout=5).json()["plugins"] == "loading"
        listed: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: listed.append(httpx.get(f"{url}/plugins", headers=AUTH, timeout=180))
        )
        waiter.start()
        answered_while_listing = 0
        while waiter.is_alive():
            health = httpx.get(f"{url}/health", timeout=5)  # hang guard, not a timing figure
            assert health.status_code == 200
            answered_while_listing += waiter.is_alive()
            time.sleep(0.2)
        waiter.join()
        assert answered_while_listing > 0, "/plugins answered before /health could be tried"
        assert listed[0].status_code == 200
        names = {entry["name"] for entry in listed[0].json()}
        assert "slow-import" in names
        assert httpx.get(f"{url}/health", timeout=5).json()["plugins"] == "ready"


def test_insecure_local_refuses_foreign_host_names(tmp_path: Path) -> None:
    """Without a token, a DNS-rebinding page (Host: evil.example) must not get through."""
    app = create_app(ServeSettings(token=None, insecure_local=True, models_dir=tmp_path))
    local = TestClient(app, base_url="http://127.0.0.1:8000")
    assert local.get("/health").status_code == 200
    assert local.get("/plugins", headers={"Host": "evil.example:8000"}).status_code == 400
    assert TestClient(app, base_url="http://localhost:8000").get("/health").status_code == 200
