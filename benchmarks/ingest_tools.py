"""One ingest tool, timed in its own process: ``python ingest_tools.py TOOL PATH REPEATS``.

A fresh process per tool, with the kernel's peak-RSS mark reset after imports,
makes the peak resident size minus the baseline that tool's own peak extra memory. The
first call is a warm-up (its peak is the one reported); the next ``REPEATS``
calls are timed. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int:
    """Start a fresh peak: Linux resets VmHWM when 5 is written to clear_refs.

    Returns the resident size now. Without this, a transient peak while importing
    (torch, MONAI) hides the call's own peak. Falls back to ``ru_maxrss``.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _peak_rss_bytes()
    return _proc_status_bytes("VmRSS") or _peak_rss_bytes()


def _peak_since_reset() -> int:
    return _proc_status_bytes("VmHWM") or _peak_rss_bytes()


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.is_file())


# ----------------------------------------------------------------- series loaders
# Each returns the volume as a numpy array (any axis order).


def _setup_raw(folder: Path) -> Callable[[], Any]:
    def run() -> np.ndarray:
        """Not a volume: the bytes of every file, the floor any loader pays."""
        return np.array([len(Path(name).read_bytes()) for name in _files(folder)])

    return run


def _setup_naive_pydicom(folder: Path) -> Callable[[], Any]:
    import pydicom

    def run() -> np.ndarray:
        datasets = [pydicom.dcmread(name) for name in _files(folder)]
        normal = np.cross(*np.reshape(np.array(datasets[0].ImageOrientationPatient, float), (2, 3)))
        datasets.sort(key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))
        slope, intercept = float(datasets[0].RescaleSlope), float(datasets[0].RescaleIntercept)
        return np.stack([ds.pixel_array for ds in datasets]).astype(np.float32) * slope + intercept

    return run


def _setup_simpleitk(folder: Path) -> Callable[[], Any]:
    import SimpleITK as sitk

    def run() -> np.ndarray:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        return sitk.GetArrayFromImage(reader.Execute())

    return run


def _setup_monai(folder: Path) -> Callable[[], Any]:
    from monai.transforms import LoadImage

    loader = LoadImage(reader="PydicomReader", image_only=True)

    def run() -> np.ndarray:
        return loader(str(folder)).numpy()

    return run


def _setup_medplug_load_image(folder: Path) -> Callable[[], Any]:
    from medplug.ingest import load_image

    def run() -> np.ndarray:
        return load_image(folder).array

    return run


def _setup_medplug_monai_reader(folder: Path) -> Callable[[], Any]:
    from monai.transforms import LoadImage

    from medplug.ingest import MedplugDicomReader

    loader = LoadImage(reader=MedplugDicomReader(), image_only=True)

    def run() -> np.ndarray:
        return loader(str(folder)).numpy()

    return run


def _series_of(scan: Any) -> list[Any]:
    series = scan.series
    return list(series.values()) if isinstance(series, dict) else list(series)


def _setup_medplug_load_series(folder: Path) -> Callable[[], Any]:
    from medplug.ingest import load_series, scan_folder

    series = _series_of(scan_folder(folder))[0]  # scanned once, outside the timing

    def run() -> np.ndarray:
        return load_series(series).array

    return run


# ----------------------------------------------------------------- folder scanners
# Each returns {series uid: number of files}.


def _setup_scan_pydicom(folder: Path) -> Callable[[], Any]:
    import pydicom

    def run() -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in _files(folder):
            ds = pydicom.dcmread(name, stop_before_pixels=True)
            counts[ds.SeriesInstanceUID] = counts.get(ds.SeriesInstanceUID, 0) + 1
        return counts

    return run


def _setup_scan_simpleitk(folder: Path) -> Callable[[], Any]:
    import SimpleITK as sitk

    def run() -> dict[str, int]:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        return {
            uid: len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids
        }

    return run


def _setup_scan_medplug(folder: Path) -> Callable[[], Any]:
    from medplug.ingest import scan_folder

    def run() -> dict[str, int]:
        counts = {}
        for series in _series_of(scan_folder(folder)):
            uid = getattr(series, "series_uid", None) or getattr(series, "uid", None) or id(series)
            files = getattr(series, "files", None) or getattr(series, "instances", None) or []
            counts[str(uid)] = len(files)
        return counts

    return run


TOOLS: dict[str, Callable[[Path], Callable[[], Any]]] = {
    "raw read": _setup_raw,
    "SimpleITK ImageSeriesReader": _setup_simpleitk,
    "MONAI LoadImage(PydicomReader)": _setup_monai,
    "naive pydicom": _setup_naive_pydicom,
    "medplug load_image": _setup_medplug_load_image,
    "medplug load_series": _setup_medplug_load_series,
    "MONAI LoadImage(MedplugDicomReader)": _setup_medplug_monai_reader,
    "scan: pydicom header-only pass": _setup_scan_pydicom,
    "scan: SimpleITK per-series listing": _setup_scan_simpleitk,
    "scan: medplug scan_folder": _setup_scan_medplug,
}


def describe_output(result: Any) -> dict[str, Any]:
    """What the order/HU check needs: shape, dtype, size and per-slice sums."""
    if isinstance(result, dict):
        return {"series": len(result), "files": int(sum(result.values()))}
    array = np.asarray(result)
    out: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    out["nbytes"] = int(array.nbytes)
    if array.ndim >= 3:
        array = np.squeeze(array)
        slice_axis = int(np.argmin(array.shape))  # 200 slices against 512 x 512
        axes = tuple(a for a in range(array.ndim) if a != slice_axis)
        out["slice_sums"] = [float(s) for s in array.astype(np.float64).sum(axis=axes)]
    return out


def main(tool: str, path: str, repeats: int) -> dict[str, Any]:
    setup = TOOLS[tool]
    try:
        run = setup(Path(path))
    except ImportError as exc:
        return {"tool": tool, "skipped": f"not importable: {exc}"}
    baseline = _reset_peak_rss()
    start = time.perf_counter()
    result = run()
    first = time.perf_counter() - start
    peak_extra = _peak_since_reset() - baseline
    output = describe_output(result)
    del result
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        del result
    return {
        "tool": tool,
        "first_s": first,
        "times_s": times,
        "median_s": float(np.median(times)) if times else first,
        "peak_extra_bytes": peak_extra,
        "output": output,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    tool_name, folder_path, n_repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(main(tool_name, folder_path, n_repeats)))
