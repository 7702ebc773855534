"""Write a synthetic volume as a valid CT Image Storage series with pydicom.

Headers carry what a real CT series carries (patient, study, series, frame of
reference, equipment, image plane, pixel, CT image, VOI LUT, SOP common), so
ingest code meets realistic files; names and IDs are obviously synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medplug.sampledata.geometry import AXIAL_ORIENTATION, SeriesGeometry

RESCALE_INTERCEPT = -1024
COMPRESSED_SYNTAXES = (RLELossless, JPEGLSLossless, JPEG2000Lossless)


@dataclass(frozen=True)
class SeriesVariant:
    """The quirks a case's files get, to exercise ingest.

    file_names: "ordered" (IM00001.dcm in InstanceNumber order) or "shuffled"
        (random hex names that say nothing about order).
    instance_order: "position" (InstanceNumber follows ImagePositionPatient),
        "reversed" or "permuted" (InstanceNumber disagrees; position is the truth).
    transfer_syntax: the UID the files are written in.
    """

    file_names: str = "ordered"
    instance_order: str = "position"
    transfer_syntax: UID = ExplicitVRLittleEndian

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax in COMPRESSED_SYNTAXES


# A 12-case cycle, so any cohort of 12 or more cases has every quirk at least once.
VARIANT_CYCLE = (
    SeriesVariant(),
    SeriesVariant(file_names="shuffled"),
    SeriesVariant(instance_order="reversed"),
    SeriesVariant(transfer_syntax=RLELossless),
    SeriesVariant(file_names="shuffled", instance_order="permuted"),
    SeriesVariant(transfer_syntax=ImplicitVRLittleEndian),
    SeriesVariant(file_names="shuffled", transfer_syntax=JPEGLSLossless),
    SeriesVariant(),
    SeriesVariant(instance_order="permuted"),
    SeriesVariant(
        file_names="shuffled", instance_order="reversed", transfer_syntax=JPEG2000Lossless
    ),
    SeriesVariant(file_names="shuffled"),
    SeriesVariant(),
)


def variant_for_case(index: int) -> SeriesVariant:
    """The quirks of the case at 0-based position ``index`` in the cohort."""
    return VARIANT_CYCLE[index % len(VARIANT_CYCLE)]


@dataclass(frozen=True)
class StudyHeader:
    """Per-case identifying and descriptive header values (all synthetic)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age_years: int
    study_date: str
    study_time: str
    accession: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    uid_entropy: tuple[str, ...]  # mixed into each SOPInstanceUID

    def sop_instance_uid(self, slice_index: int) -> str:
        return generate_uid(entropy_srcs=[*self.uid_entropy, "sop", str(slice_index)])


def _base_dataset(header: StudyHeader, geometry: SeriesGeometry) -> Dataset:
    """Every attribute shared by the slices of one series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = header.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = header.study_time
    ds.AccessionNumber = header.accession
    ds.Modality = "CT"
    ds.Manufacturer = "medplug synthetic"
    ds.InstitutionName = "medplug synthetic cohort"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST (SYNTHETIC)"
    ds.SeriesDescription = "AXIAL 2.5MM SYNTHETIC PHANTOM"
    ds.ManufacturerModelName = "medplug phantom"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.birth_date
    ds.PatientSex = header.sex
    ds.PatientAge = f"{header.age_years:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "SYNTHETIC DATA - NO REAL PATIENT"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = geometry.slice_spacing_mm
    ds.KVP = 120
    ds.SpacingBetweenSlices = geometry.slice_spacing_mm
    ds.DataCollectionDiameter = 500
    ds.SoftwareVersions = "medplug sampledata 1"
    ds.ReconstructionDiameter = round(geometry.shape[0] * geometry.pixel_spacing_mm, 2)
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 150
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 200
    ds.Exposure = 100
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = list(AXIAL_ORIENTATION)
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = geometry.shape[1]
    ds.Columns = geometry.shape[0]
    ds.PixelSpacing = [geometry.pixel_spacing_mm, geometry.pixel_spacing_mm]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    return ds


def _instance_numbers(n_slices: int, variant: SeriesVariant, rng: np.random.Generator) -> list[int]:
    """InstanceNumber of each slice k (k in position order)."""
    if variant.instance_order == "reversed":
        return list(range(n_slices, 0, -1))
    if variant.instance_order == "permuted":
        return [int(n) + 1 for n in rng.permutation(n_slices)]
    return list(range(1, n_slices + 1))


def write_ct_series(
    volume_hu: np.ndarray,
    geometry: SeriesGeometry,
    header: StudyHeader,
    variant: SeriesVariant,
    out_dir: Path,
    rng: np.random.Generator,
) -> list[Path]:
    """Write one file per slice; return the paths in slice (position) order.

    ``volume_hu`` is indexed (column i, row j, slice k); slice k is stored at
    ``geometry.slice_position_lps(k)``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    n_slices = geometry.shape[2]
    instance_numbers = _instance_numbers(n_slices, variant, rng)
    hex_names = [f"{int(x):016x}" for x in rng.integers(0, 2**63, size=n_slices)]
    base = _base_dataset(header, geometry)
    stored = (volume_hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)
    paths = []
    for k in range(n_slices):
        ds = Dataset()
        ds.update(base)
        sop_uid = header.sop_instance_uid(k)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance_numbers[k]
        position = geometry.slice_position_lps(k)
        ds.ImagePositionPatient = list(position)
        ds.SliceLocation = position[2]
        # DICOM pixel data is row-major (row j, column i): transpose the (i, j) slice.
        pixels = np.ascontiguousarray(stored[:, :, k].T)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        if variant.compressed:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(variant.transfer_syntax, pixels, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = variant.transfer_syntax
        if variant.file_names == "shuffled":
            name = hex_names[k]
        else:
            name = f"IM{instance_numbers[k]:05d}.dcm"
        path = out_dir / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
