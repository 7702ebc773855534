"""medplug batch and listen against a real Orthanc: QIDO/WADO in, STOW-RS and C-STORE out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from batch_support import (
    ORTHANC,
    OrthancServer,
    dciodvfy_errors,
    env_with,
    free_port,
    tool,
)

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc not installed"),
    pytest.mark.skipif(tool("storescu") is None, reason="dcmtk storescu not installed"),
]
N_STUDIES = 3


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, sample_cohort: Path):
    """Orthanc on free localhost ports, loaded with the first cohort studies by storescu."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        for index in range(1, N_STUDIES + 1):
            server.store_folder(sample_cohort / "cases" / f"case{index:04d}" / "dicom")
        yield server
    finally:
        server.stop()


def sr_series(orthanc: OrthancServer, study_uid: str) -> list[dict]:
    return [s for s in orthanc.series_of_study(study_uid) if s["00080060"]["Value"] == ["SR"]]


def fetch_instance(orthanc: OrthancServer, study_uid: str, series_uid: str, target: Path) -> Path:
    """WADO-RS retrieve of the one instance of a series, saved for dciodvfy."""
    from dicomweb_client.api import DICOMwebClient

    (dataset,) = DICOMwebClient(orthanc.dicomweb).retrieve_series(study_uid, series_uid)
    dataset.save_as(target, enforce_file_format=True)
    return target


def test_dicomweb_batch_pushes_a_valid_sr_into_each_source_study(
    orthanc: OrthancServer, intensity_site: Path, intensity_dir: Path, tmp_path: Path
) -> None:
    studies = orthanc.get("/dicom-web/studies")
    study_uids = sorted(item["0020000D"]["Value"][0] for item in studies)
    assert len(study_uids) == N_STUDIES
    result = subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "batch", orthanc.dicomweb,
         "--plugin", "mean-intensity", "--model", str(intensity_dir),
         "--out", str(tmp_path / "out"),
         "--filter", "ModalitiesInStudy=CT", "--no-progress", "--workers", "1"],
        env=env_with(intensity_site), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert sorted(r["study_uid"] for r in records) == study_uids
    assert all(r["status"] == "ok" for r in records)
    assert all(r["provenance"]["pushed_to"].startswith("STOW-RS") for r in records)
    for study_uid in study_uids:
        (series,) = sr_series(orthanc, study_uid)  # exactly one SR, in the right study
        sr_path = fetch_instance(
            orthanc, study_uid, series["0020000E"]["Value"][0], tmp_path / "sr.dcm"
        )
        assert dciodvfy_errors(sr_path) == []
        sr = pydicom.dcmread(sr_path)
        assert sr.StudyInstanceUID == study_uid
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == study_uid
    # Rerunning is a no-op: nothing is pushed twice.
    rerun = subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "batch", orthanc.dicomweb,
         "--plugin", "mean-intensity", "--model", str(intensity_dir),
         "--out", str(tmp_path / "out"),
         "--no-progress"],
        env=env_with(intensity_site), capture_output=True, text=True,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == N_STUDIES
    assert all(len(sr_series(orthanc, uid)) == 1 for uid in study_uids)


def test_listener_accepts_allowed_ae_only_and_forwards_the_sr_by_c_store(
    orthanc: OrthancServer,
    intensity_site: Path,
    intensity_dir: Path,
    tmp_path: Path,
    sample_cohort: Path,
) -> None:
    port = free_port()
    out = tmp_path / "listen"
    listener = subprocess.Popen(
        [sys.executable, "-m", "medplug.cli.main", "listen", "--ae-title", "MEDPLUG",
         "--port", str(port), "--plugin", "mean-intensity", "--model", str(intensity_dir),
         "--allow", "CTSCANNER", "--forward-to", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
         "--out", str(out), "--quiet-seconds", "1.5"],
        env=env_with(intensity_site), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        case = sample_cohort / "cases" / "case0005" / "dicom"  # uncompressed: storescu sends as is
        study_uid = str(
            pydicom.dcmread(next(case.iterdir()), stop_before_pixels=True).StudyInstanceUID
        )
        send = [tool("storescu"), "+sd", "-aec", "MEDPLUG", "-R", "127.0.0.1", str(port), str(case)]
        deadline = time.time() + 60
        while True:  # wait for the listener to bind
            intruder = subprocess.run(
                [*send[:1], "-aet", "INTRUDER", *send[1:]], capture_output=True
            )
            if (
                b"Association Rejected" in intruder.stderr + intruder.stdout
                or time.time() > deadline
            ):
                break
            time.sleep(0.5)
        assert intruder.returncode != 0, "an AE title off the allow-list was accepted"
        assert b"Association Rejected" in intruder.stderr + intruder.stdout
        sent = subprocess.run([*send[:1], "-aet", "CTSCANNER", *send[1:]], capture_output=True)
        assert sent.returncode == 0, sent.stderr
        while time.time() < deadline and not _has_sr(orthanc, study_uid):
            time.sleep(0.5)
        assert _has_sr(orthanc, study_uid), "the SR was not forwarded to Orthanc"
    finally:
        listener.terminate()
        output, _ = listener.communicate(timeout=60)
    records = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert [r["study_uid"] for r in records] == [study_uid]
    assert records[0]["status"] == "ok" and records[0]["provenance"]["instances"] == 32
    assert records[0]["provenance"]["pushed_to"].startswith("C-STORE")
    assert dciodvfy_errors(out / records[0]["provenance"]["files"]["sr"]) == []
    assert study_uid not in (out / "batch.log").read_text()


def _has_sr(orthanc: OrthancServer, study_uid: str) -> bool:
    try:
        return bool(sr_series(orthanc, study_uid))
    except (httpx.HTTPError, OSError):  # OSError: urllib's HTTPError/URLError
        return False
