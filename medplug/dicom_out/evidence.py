"""What every written object must cite about the images a plugin read: one function for all.

Batch, listener and ``medplug serve`` prepare the evidence the same way
(``study_evidence``, or ``evidence_for_path`` where only a folder is at hand): one
full header (patient and study attributes, no pixels) and, per slice of the
loaded volume in its own order (array axis k), the instance's UIDs and position.
That is enough for an SR to cite the series and for a Parametric Map or SEG to
put one frame on each source slice, without reading any file twice. Small and
picklable, so it travels to the writer processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.valuerep import DS

from medplug.contract import ImageVolume
from medplug.ingest.scan import ScanResult

# Patient/study attributes every object copies from its evidence. They are Type 2
# (present, may be empty) but some exporters drop them; empty ones keep outputs valid.
TYPE2_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


@dataclass
class StudyEvidence:
    """The source series as written objects cite it.

    ``instances`` and ``positions`` follow the loaded volume's slice order
    (array axis k) when the series is a stack of single-frame images, so frame
    k of a map or mask is written against ``instances[k]`` at ``positions[k]``.
    ``affine`` and ``shape`` are the loaded volume's, to check that mapping.
    """

    reference: Dataset
    study_uid: str
    series_uid: str
    instances: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    positions: list[tuple[float, ...] | None] = field(default_factory=list)
    affine: np.ndarray | None = None  # voxel (i, j, k) -> RAS mm of the loaded volume
    shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.instances)

    def datasets(self) -> list[Dataset]:
        """The reference header first, then a minimal dataset per other instance (SR)."""
        cited = [self.reference]
        reference_uid = str(self.reference.get("SOPInstanceUID", ""))
        for sop_class, sop_instance in self.instances:
            if sop_instance == reference_uid:
                continue
            item = Dataset()
            item.SOPClassUID = sop_class
            item.SOPInstanceUID = sop_instance
            item.StudyInstanceUID = self.study_uid
            item.SeriesInstanceUID = self.series_uid
            cited.append(item)
        return cited

    def source_images(self) -> list[Dataset]:
        """One header per slice, in volume order: the reference's attributes, each
        instance's own UIDs and position. What highdicom needs to derive a
        multi-frame object frame by frame from a single-frame series."""
        images = []
        for (sop_class, sop_instance), position in zip(self.instances, self.positions, strict=True):
            item = Dataset()
            for element in self.reference:  # shared elements, never modified
                item.add(element)
            # add_new replaces the element (no write through to the shared one)
            item.add_new("SOPClassUID", "UI", sop_class)
            item.add_new("SOPInstanceUID", "UI", sop_instance)
            if position is not None:
                item.add_new(
                    "ImagePositionPatient", "DS", [DS(v, auto_format=True) for v in position]
                )
            images.append(item)
        return images


def with_type2_study_attributes(header: Dataset) -> Dataset:
    """``header`` with every Type 2 patient/study attribute present (empty if missing)."""
    for keyword in TYPE2_STUDY_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def study_evidence(scan: ScanResult, image: ImageVolume) -> StudyEvidence:
    """The selected series' instances (from the scan) and one full header to cite.

    Instances are put in the volume's slice order (``image.sop_uids``, which
    the ingest writes in array k order), so frames line up with the slices.
    """
    series = scan.find_series(image.series_uid) if image.series_uid else scan.series[0]
    by_uid = {h.sop_instance_uid: h for h in series.instances}
    wanted = [uid for uid in image.sop_uids if uid in by_uid]
    headers = [by_uid[uid] for uid in wanted] if wanted else list(series.instances)
    middle = headers[len(headers) // 2]  # the SR's source image: a slice from the volume
    reference = with_type2_study_attributes(pydicom.dcmread(middle.path, stop_before_pixels=True))
    return StudyEvidence(
        reference=reference,
        study_uid=str(reference.StudyInstanceUID),
        series_uid=series.series_uid,
        instances=[(h.sop_class_uid, h.sop_instance_uid) for h in headers],
        positions=[tuple(h.image_position) if h.image_position else None for h in headers],
        affine=np.asarray(image.affine, dtype=float),
        shape=tuple(int(n) for n in image.array.shape),
    )


def evidence_for_path(path: Path, image: ImageVolume) -> StudyEvidence:
    """``study_evidence`` for a study folder (or file) read outside a batch (``serve``)."""
    from medplug.ingest import scan_folder

    if not image.sop_uids:
        raise ValueError("DICOM output needs a DICOM input (not NIfTI or text only)")
    return study_evidence(scan_folder(path, workers=1), image)
