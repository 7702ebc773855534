"""Test data for the ingest benchmark, written with ``medplug.sampledata``'s DICOM writer.

- ``series/``: one 512x512x200 CT series, shuffled file names, InstanceNumber
  permuted against ImagePositionPatient (position is the truth), plus
  ``truth.json`` holding the HU sum of each slice in position order, so every
  tool's output can be checked for slice order and rescale.
- ``folder/``: 2,000 files in 40 series (50 slices of 128x128 each), all in one
  flat folder with meaningless names, the case where per-series listing goes
  quadratic.

Generated once into ``benchmarks/work/ingest`` (git-ignored) and reused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medplug.sampledata.dicom_series import SeriesVariant, StudyHeader, write_ct_series
from medplug.sampledata.geometry import draw_geometry
from medplug.sampledata.phantom import render_volume

DATA_VERSION = 1
SERIES_SHAPE = (512, 512, 200)
FOLDER_SERIES, FOLDER_SLICES, FOLDER_SIZE = 40, 50, 128
BENCH_VARIANT = SeriesVariant(
    file_names="shuffled", instance_order="permuted", transfer_syntax=ExplicitVRLittleEndian
)


def _header(tag: str) -> StudyHeader:
    entropy = ("medplug-bench-ingest", tag)
    return StudyHeader(
        patient_name=f"SYNTHETIC^BENCH{tag.upper()}",
        patient_id=f"MEDPLUG-BENCH-{tag}",
        birth_date="19600101",
        sex="F",
        age_years=60,
        study_date="20240101",
        study_time="120000",
        accession="SYNBENCH",
        study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
        series_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*entropy, "frame"]),
        uid_entropy=entropy,
    )


def _write_series(out_dir: Path, shape: tuple[int, int, int], tag: str, seed: int) -> np.ndarray:
    """Write one shuffled, InstanceNumber-permuted series; return its HU volume (i, j, k)."""
    rng = np.random.default_rng(seed)
    geometry = draw_geometry(rng, shape, pixel_spacing_mm=0.75, slice_spacing_mm=1.25)
    volume = render_volume(rng, geometry, None, lesion_contrast_hu=0.0, noise_hu=12.0)
    write_ct_series(volume, geometry, _header(tag), BENCH_VARIANT, out_dir, rng)
    return volume


def ensure_data(work: Path) -> tuple[Path, Path, list[float]]:
    """Create (or reuse) the series and the folder; return their paths and the slice sums."""
    marker = work / "data.json"
    series_dir, folder_dir = work / "series", work / "folder"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == DATA_VERSION:
        return series_dir, folder_dir, json.loads(marker.read_text())["slice_sums"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"generating {SERIES_SHAPE} series ...", flush=True)
    volume = _write_series(series_dir, SERIES_SHAPE, "series", seed=1)
    slice_sums = [float(s) for s in volume.astype(np.int64).sum(axis=(0, 1))]
    del volume
    print(f"generating {FOLDER_SERIES * FOLDER_SLICES} files in {FOLDER_SERIES} series ...")
    for index in range(FOLDER_SERIES):
        shape = (FOLDER_SIZE, FOLDER_SIZE, FOLDER_SLICES)
        _write_series(folder_dir, shape, f"folder{index:02d}", seed=100 + index)
    marker.write_text(json.dumps({"version": DATA_VERSION, "slice_sums": slice_sums}))
    return series_dir, folder_dir, slice_sums
