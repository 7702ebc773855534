"""Shared by the viewer tests (napari, REST API, web page): a real third-party plugin
installed as its own distribution, its model folder, and small DICOM/NIfTI studies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
from plugin_distribution import install_plugin_distribution
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BRIGHT_SPOT_PLUGIN = '''
"""Finds a bright blob in a CT volume: the smoothed excess over the median is the
heatmap, its peak (in HU) against a threshold read from the model folder is the score.
An optional ``delay_s`` in the model config makes every prediction that slow (timeout tests)."""
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

from medplug.contract import Case, Explanation, InputSpec, Plugin, PluginInfo, Prediction


class BrightSpotPlugin(Plugin):
    name = "bright-spot"

    def __init__(self, threshold_hu: float, width_hu: float, delay_s: float = 0.0) -> None:
        self.threshold_hu = threshold_hu
        self.width_hu = width_hu
        self.delay_s = delay_s
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name, version="1.2", task="classification",
            labels=["no_lesion", "lesion"],
            inputs={"ct": InputSpec(kind="image", modality="CT", spatial_dims=3),
                    "report": InputSpec(kind="text", required=False)},
            description="Bright blob detector (test plugin).",
        )

    @classmethod
    def from_pretrained(cls, model_dir):
        config = json.loads((Path(model_dir) / "bright_spot.json").read_text())
        return cls(config["threshold_hu"], config["width_hu"], config.get("delay_s", 0.0))

    def _predict(self, case: Case) -> Prediction:
        time.sleep(self.delay_s)
        image = case.image
        array = image.array.astype(np.float32)
        excess = uniform_filter(array - float(np.median(array)), size=3)
        heat = np.clip(excess, 0, None)
        score = 1 / (1 + math.exp(-(float(excess.max()) - self.threshold_hu) / self.width_hu))
        warnings = []
        spacing = image.spacing
        if max(spacing) > 2 * min(spacing):
            warnings.append(f"anisotropic voxels {tuple(round(s, 2) for s in spacing)} mm")
        if case.report and "artifact" in case.report.lower():
            warnings.append("report mentions artifacts")
        label = "lesion" if score >= 0.5 else "no_lesion"
        return Prediction(
            plugin=self.name, plugin_version="1.2", case_id=case.case_id, label=label,
            probabilities={"no_lesion": 1 - score, "lesion": score},
            explanation=Explanation(heatmap=heat, heatmap_affine=image.affine),
            warnings=warnings,
        )
'''


def install_bright_spot(root: Path) -> Path:
    """pip-install the plugin as distribution ``acme-bright-spot`` into ``root/site``."""
    return install_plugin_distribution(
        root,
        "acme-bright-spot",
        "acme_bright_spot",
        BRIGHT_SPOT_PLUGIN,
        {"bright-spot": "acme_bright_spot:BrightSpotPlugin"},
        version="1.2",
    )


def write_bright_spot_model(models: Path, delay_s: float = 0.0) -> Path:
    folder = models / "bright-spot"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"threshold_hu": 150.0, "width_hu": 40.0, "delay_s": delay_s}
    (folder / "bright_spot.json").write_text(json.dumps(config))
    return folder


def phantom(shape: tuple[int, int, int] = (40, 32, 12), blob: bool = True) -> np.ndarray:
    """A soft-tissue block (HU ~40) with an optional bright blob, indexed (i, j, k)."""
    rng = np.random.default_rng(0)
    volume = 40 + rng.normal(0, 5, size=shape)
    if blob:
        i, j, k = np.indices(shape)
        inside = (i - 28) ** 2 + (j - 10) ** 2 + 4 * (k - 7) ** 2 < 25
        volume[inside] = 400
    return volume.astype(np.float32)


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_spacing: float = 2.5,
    origin: tuple[float, float, float] = (-12.0, 30.0, 100.0),
) -> Path:
    """Write an (i, j, k) HU volume as an axial CT series (one file per k, shuffled names).

    ``pixel_spacing`` is DICOM's (row spacing, column spacing)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    n_slices = volume.shape[2]
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName = "Viewer^Test"
        ds.PatientID = "VIEW001"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * slice_spacing]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = slice_spacing
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        stored = np.round(volume[:, :, k].T + 1024).astype(np.int16)  # rows = j, columns = i
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"im{(k * 7) % n_slices:03d}_{k}.dcm", enforce_file_format=True)
    return folder


def write_nifti(path: Path, volume: np.ndarray, spacing=(0.7, 0.8, 2.5)) -> Path:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


def ras_affine(pixel_spacing=(0.8, 0.7), slice_spacing=2.5, origin=(-12.0, 30.0, 100.0)):
    """The RAS affine medplug should read for ``write_dicom_series`` defaults."""
    return np.array(
        [
            [-pixel_spacing[1], 0, 0, -origin[0]],
            [0, -pixel_spacing[0], 0, -origin[1]],
            [0, 0, slice_spacing, origin[2]],
            [0, 0, 0, 1],
        ]
    )


def ensure_display() -> None:
    """Headless Qt with OpenGL for napari's canvas: ``QT_QPA_PLATFORM=offscreen``.

    Qt's offscreen platform makes its OpenGL contexts through GLX, so it needs
    an X display; without one we start a private Xvfb (``make test`` installs
    ``xvfb``), and without Xvfb the calling test module is skipped with the reason.
    """
    import os
    import shutil

    import pytest

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip(
            "no X display and no Xvfb for napari's OpenGL canvas (apt-get install xvfb)",
            allow_module_level=True,
        )
    read_end, write_end = os.pipe()
    subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Xvfb ends with this test process, after Qt has closed its connection;
        # stopping it earlier (atexit) makes Xlib abort the process on exit.
        preexec_fn=_die_with_parent,
    )
    os.close(write_end)
    with os.fdopen(read_end) as display_number:
        number = display_number.readline().strip()
    os.environ["DISPLAY"] = f":{number}"


def _die_with_parent() -> None:
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def start_orthanc(folder: Path):
    """A private Orthanc with DICOMweb on a free loopback port: (process, base URL)."""
    import json
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "medplug-viewer-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [ORTHANC_DICOMWEB],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [ORTHANC, str(folder / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/system", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("Orthanc did not start")
