"""``medplug listen`` against hostile senders: UIDs are data, not file names.

A real pynetdicom SCP (``StudyListener``) receives from a real pynetdicom SCU
and from dcmtk's ``storescu``. The sender uses an allowed AE title (AE titles
are self-declared, so that proves nothing) and a SOP Instance UID that is a
path; nothing may be written outside the spool folder.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from batch_support import free_port, tool
from dicom_factory import write_ct_series
from pydicom import config as pydicom_config
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from medplug.batch.listener import ListenerOptions, StudyListener
from medplug.contract import Case, InputSpec, Plugin, PluginInfo, Prediction
from medplug.safe_paths import UnsafePathError, inside, is_dicom_uid

ALLOWED = "CTSCANNER"


class ConstantPlugin(Plugin):
    """A real (trivial) plugin; the listener never gets to run it in these tests."""

    name = "constant"

    def __init__(self) -> None:
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name,
            version="1.0",
            task="classification",
            labels=["a", "b"],
            inputs={"image": InputSpec(kind="image", spatial_dims=3)},
        )

    @classmethod
    def from_pretrained(cls, model_dir):  # type: ignore[no-untyped-def]
        return cls()

    def _predict(self, case: Case) -> Prediction:
        raise AssertionError("not reached")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[StudyListener, int]]:
    port = free_port()
    options = ListenerOptions(
        ae_title="MEDPLUG",
        port=port,
        allowed_aets=[ALLOWED],
        out_dir=tmp_path / "out",
        quiet_seconds=3600,  # receive only: nothing is processed during the test
    )
    scp = StudyListener([ConstantPlugin()], options)
    scp.start()
    try:
        yield scp, port
    finally:
        scp.stop()


def hostile_instance(tmp_path: Path, sop_uid: str) -> pydicom.Dataset:
    (path,) = write_ct_series(tmp_path / "src", np.zeros((4, 4, 1), dtype=np.int16))
    dataset = pydicom.dcmread(path)
    dataset.SOPInstanceUID = sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return dataset


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def send(port: int, dataset: pydicom.Dataset) -> int:
    ae = AE(ae_title=ALLOWED)
    ae.add_requested_context(CTImageStorage, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDPLUG")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return int(status.Status)


def test_uid_grammar() -> None:
    assert is_dicom_uid("1.2.840.10008.5.1.4.1.1.2")
    assert is_dicom_uid("1." + "2" * 62)
    for bad in ("", "1.2.", ".1", "1..2", "1.2.3a", "../../x", "1.2/3", "1." + "2" * 63, None):
        assert not is_dicom_uid(bad), bad


def test_inside_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    assert inside(tmp_path / "spool", "1.2.3.dcm") == tmp_path / "spool" / "1.2.3.dcm"
    for name in ("../x.dcm", "/etc/passwd", "a/../../x", "."):
        with pytest.raises(UnsafePathError):
            inside(tmp_path / "spool", name)
    (tmp_path / "spool" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "spool", "link/x.dcm")


def test_traversal_uid_from_pynetdicom_is_refused(
    listener: tuple[StudyListener, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scp, port = listener
    # The spool folder is out/spool/<hash>/, so three '..' reach tmp_path.
    victim = tmp_path / "victim"
    victim.mkdir()
    monkeypatch.setattr(pydicom_config.settings, "writing_validation_mode", pydicom_config.WARN)
    hostile = hostile_instance(tmp_path / "h", "../../../victim/x")
    good = hostile_instance(tmp_path / "g", pydicom.uid.generate_uid())
    before = files_under(tmp_path)
    status = send(port, hostile)
    assert status != 0x0000, "an instance with a path for a SOP Instance UID was accepted"
    assert files_under(tmp_path) == before, "the hostile instance left a file behind"
    assert not any(victim.iterdir())

    # A well-formed instance from the same sender is still received, inside the spool.
    assert send(port, good) == 0x0000
    written = files_under(tmp_path) - before
    assert [path.name for path in written] == [f"{good.SOPInstanceUID}.dcm"]
    assert all(scp.spool.resolve() in path.resolve().parents for path in written)


@pytest.mark.skipif(tool("storescu") is None, reason="dcmtk storescu not installed")
def test_traversal_uid_from_storescu_is_refused(
    listener: tuple[StudyListener, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, port = listener
    victim = tmp_path / "victim"
    victim.mkdir()
    monkeypatch.setattr(pydicom_config.settings, "writing_validation_mode", pydicom_config.WARN)
    hostile = hostile_instance(tmp_path / "h", "../../../victim/x")
    file = tmp_path / "hostile.dcm"
    hostile.save_as(file, enforce_file_format=True)
    before = files_under(tmp_path)
    sent = subprocess.run(
        [tool("storescu"), "-aet", ALLOWED, "-aec", "MEDPLUG", "127.0.0.1", str(port), str(file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = sent.stdout + sent.stderr
    assert "Store Response" in output or "Store SCU" in output or sent.returncode != 0, output
    assert files_under(tmp_path) == before
    assert not any(victim.iterdir())
