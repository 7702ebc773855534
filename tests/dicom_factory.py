"""Small synthetic DICOM series written with pydicom, for ingest tests.

Clearly synthetic (no real patient data). Geometry is set explicitly so tests
can check the affine medplug derives against the one the files were made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

CT_IMAGE = CTImageStorage


def _base_dataset(sop_class: str, transfer_syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = "SYN0001"
    return ds


def write_ct_series(
    folder: Path,
    volume: np.ndarray,
    *,
    spacing: Sequence[float] = (0.8, 0.7, 2.5),
    origin: Sequence[float] = (-100.0, -120.0, 50.0),
    row_cosine: Sequence[float] = (1.0, 0.0, 0.0),
    col_cosine: Sequence[float] = (0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    instance_numbers: Sequence[int] | None = None,
    positions: Sequence[Sequence[float]] | None = None,
    file_names: Sequence[str] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_description: str = "AXIAL 2.5mm",
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    frame_of_reference_uid: str | None = None,
) -> list[Path]:
    """Write ``volume`` indexed (column, row, slice) in HU as one series.

    ``spacing`` is (column spacing, row spacing, slice step) in mm; the slice
    normal is row_cosine x col_cosine. Stored values are (HU - intercept) / slope.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n_cols, n_rows, n_slices = volume.shape
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    row_cos = np.asarray(row_cosine, float)
    col_cos = np.asarray(col_cosine, float)
    normal = np.cross(row_cos, col_cos)
    paths = []
    for k in range(n_slices):
        ds = _base_dataset(CT_IMAGE, ImplicitVRLittleEndian)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality = modality
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        if frame_of_reference_uid:
            ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.SeriesDescription = series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        if positions is not None:
            position = np.asarray(positions[k], float)
        else:
            position = np.asarray(origin, float) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = n_rows, n_cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        stored = np.round((volume[:, :, k].T - intercept) / slope).astype("<i2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        name = file_names[k] if file_names is not None else f"slice_{k:04d}.dcm"
        path = folder / name
        if transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds.compress(transfer_syntax, stored)
        else:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_secondary_capture(path: Path, image: np.ndarray, *, monochrome1: bool = False) -> Path:
    """A single 2D grey image (columns, rows) as a Secondary Capture object."""
    ds = _base_dataset(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ds.Modality = "OT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = image.shape[1], image.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image.T.astype("<u2")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
