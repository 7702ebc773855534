"""DICOM Structured Reports of plugin results, built with highdicom.

The SR goes back into the PACS next to the images it describes, so a
radiologist sees it in the same study. It is a TID 1500 Measurement Report:
each plugin is one measurement group identified by algorithm name and version
(TID 4019); its label is a coded qualitative evaluation and each class
probability a numeric measurement. The images it was computed from are listed
as evidence (study, series, instances) and as the group's source image.
A plugin that returned a segmentation adds one TID 1411 volumetric group per
segment: the segment's volume in mL, referencing that segment of the DICOM SEG
written beside the SR (which is then part of the evidence too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

from medplug.contract import Prediction

MANUFACTURER = "medplug"
CODING_SCHEME = "99MEDPLUG"  # private coding scheme for plugin labels (PS3.16 8.2)
SR_SERIES_NUMBER = 9901
UNIT_PROBABILITY = CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
FINDING = CodedConcept(value="121071", scheme_designator="DCM", meaning="Finding")
CT_PROCEDURE = CodedConcept(
    value="25045-6", scheme_designator="LN", meaning="CT unspecified body region"
)
IMAGING_PROCEDURE = CodedConcept(
    value="363679005", scheme_designator="SCT", meaning="Imaging procedure"
)
VOLUME = CodedConcept(value="118565006", scheme_designator="SCT", meaning="Volume")
UNIT_ML = CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")


@dataclass(frozen=True)
class SegmentVolume:
    """One segment of a written SEG and its volume, for a TID 1411 group."""

    seg_sop_uid: str
    seg_series_uid: str
    study_uid: str
    source_series_uid: str  # the image series the SEG was derived from
    segment_number: int
    label: str
    category: CodedConcept
    type: CodedConcept
    volume_ml: float
    plugin: str
    plugin_version: str


@dataclass(frozen=True)
class SrIdentity:
    """UIDs of one SR, chosen by the caller so a rerun can reuse them (idempotent push)."""

    series_uid: str
    sop_uid: str

    @classmethod
    def new(cls) -> SrIdentity:
        return cls(series_uid=generate_uid(), sop_uid=generate_uid())


def label_code(label: str) -> CodedConcept:
    """A plugin label as a code in the private medplug scheme (value max 16 chars)."""
    return CodedConcept(value=label[:16], scheme_designator=CODING_SCHEME, meaning=label[:64])


def probability_code(label: str) -> CodedConcept:
    return CodedConcept(
        value=f"P:{label}"[:16],
        scheme_designator=CODING_SCHEME,
        meaning=f"Probability of {label}"[:64],
    )


def measurement_group(
    prediction: Prediction, source_image: Dataset | None
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One plugin's result: algorithm id, coded label, probabilities as measurements."""
    algorithm = hd.sr.AlgorithmIdentification(
        name=prediction.plugin, version=prediction.plugin_version
    )
    measurements = [
        hd.sr.Measurement(
            name=probability_code(label),
            value=float(probability),
            unit=UNIT_PROBABILITY,
            algorithm_id=algorithm,
        )
        for label, probability in prediction.probabilities.items()
    ]
    evaluations = (
        [hd.sr.QualitativeEvaluation(name=FINDING, value=label_code(prediction.label))]
        if prediction.label
        else []
    )
    sources = (
        [hd.sr.SourceImageForMeasurementGroup.from_source_image(source_image)]
        if source_image is not None
        else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"medplug {prediction.plugin}"[:64]
        ),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
        source_images=sources,
    )


def volume_group(volume: SegmentVolume) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411: the segment's volume in mL, referencing the segment in the SEG."""
    algorithm = hd.sr.AlgorithmIdentification(name=volume.plugin, version=volume.plugin_version)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"{volume.plugin} {volume.label}"[:64]
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=SegmentationStorage,
            sop_instance_uid=volume.seg_sop_uid,
            segment_number=volume.segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(volume.source_series_uid),
        ),
        finding_type=volume.type,
        finding_category=volume.category,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=VOLUME, value=float(volume.volume_ml), unit=UNIT_ML, algorithm_id=algorithm
            )
        ],
    )


def build_sr(
    predictions: Sequence[Prediction],
    evidence: Sequence[Dataset],
    identity: SrIdentity | None = None,
    volumes: Sequence[SegmentVolume] = (),
) -> hd.sr.Comprehensive3DSR:
    """An SR in the source study holding every plugin's result.

    ``evidence`` are the header datasets (pixels not needed) of the instances
    the plugins read. The first one must be a full header: it supplies patient
    and study attributes, so the SR lands in the same study in the PACS, and it
    is the measurements' source image. The others need only their study,
    series, SOP class and SOP instance UIDs (see ``StudyEvidence.datasets``).
    ``volumes``: segments of SEGs written beside the SR; each SEG joins the evidence.
    """
    if not evidence:
        raise ValueError("an SR needs at least one source instance as evidence")
    if not predictions:
        raise ValueError("an SR needs at least one prediction")
    identity = identity or SrIdentity.new()
    source_image = evidence[0]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=", ".join(f"{p.plugin} {p.plugin_version}" for p in predictions)[:64],
        ),
    )
    modality = getattr(source_image, "Modality", None)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CT_PROCEDURE if modality == "CT" else IMAGING_PROCEDURE,
        imaging_measurements=[measurement_group(p, source_image) for p in predictions]
        + [volume_group(volume) for volume in volumes],
    )
    segs = {volume.seg_sop_uid: _cited(volume) for volume in volumes}
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence) + list(segs.values()),
        content=report,
        series_instance_uid=identity.series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="medplug AI results",
        is_complete=True,
    )


def _cited(volume: SegmentVolume) -> Dataset:
    """The SEG as the evidence sequence cites it (UIDs only)."""
    item = Dataset()
    item.SOPClassUID = SegmentationStorage
    item.SOPInstanceUID = volume.seg_sop_uid
    item.StudyInstanceUID = volume.study_uid
    item.SeriesInstanceUID = volume.seg_series_uid
    return item
