"""What the batch worker processes load once, in their fork server, before any study.

The fork server imports this module and every worker is forked from it, so
whatever is done here is paid once per run instead of once per worker: the
decoding and output code, and highdicom's tables of the DICOM standard (read
lazily from JSON the first time an SR is built, ~0.4 s), warmed up by
building one throwaway SR from a made-up header. The fork server starts
while the main process is still importing torch and the plugins.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

import medplug.batch.loading  # noqa: F401  (decoding, imported for the workers)
import medplug.dicom_out.job  # noqa: F401  (SR, PM, SEG and SC writing, imported for the workers)
from medplug.contract import Prediction
from medplug.dicom_out.sr import build_sr


def _made_up_header() -> Dataset:
    """A minimal CT header: nobody's, never written anywhere."""
    header = Dataset()
    header.SOPClassUID = CTImageStorage
    header.SOPInstanceUID = generate_uid()
    header.StudyInstanceUID = generate_uid()
    header.SeriesInstanceUID = generate_uid()
    header.Modality = "CT"
    header.PatientID = "WARMUP"
    header.PatientName = "WARMUP^"
    header.PatientBirthDate = ""
    header.PatientSex = ""
    header.StudyID = "1"
    header.StudyDate = "20000101"
    header.StudyTime = "000000"
    header.ReferringPhysicianName = ""
    header.AccessionNumber = ""
    header.Rows = header.Columns = 1
    header.SamplesPerPixel = 1
    header.PhotometricInterpretation = "MONOCHROME2"
    header.BitsAllocated = header.BitsStored = 16
    header.HighBit = 15
    header.PixelRepresentation = 1
    return header


def warm_up() -> None:
    """Build (and drop) one SR, so highdicom's lazy tables are loaded here."""
    prediction = Prediction("warm-up", "0", "warm-up", "yes", {"no": 0.5, "yes": 0.5})
    build_sr([prediction], [_made_up_header()])


warm_up()
