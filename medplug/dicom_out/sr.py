"""DICOM Structured Reports of plugin results, built with highdicom.

The SR goes back into the PACS next to the images it describes, so a
radiologist sees it in the same study. It is a TID 1500 Measurement Report:
each plugin is one measurement group identified by algorithm name and version
(TID 4019); its label is a coded qualitative evaluation and each class
probability a numeric measurement. The images it was computed from are listed
as evidence (study, series, instances) and as the group's source image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

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


def build_sr(
    predictions: Sequence[Prediction],
    evidence: Sequence[Dataset],
    identity: SrIdentity | None = None,
) -> hd.sr.Comprehensive3DSR:
    """An SR in the source study holding every plugin's result.

    ``evidence`` are the header datasets (pixels not needed) of the instances
    the plugins read. The first one must be a full header: it supplies patient
    and study attributes, so the SR lands in the same study in the PACS, and it
    is the measurements' source image. The others need only their study,
    series, SOP class and SOP instance UIDs (see ``StudyEvidence.datasets``).
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
        imaging_measurements=[measurement_group(p, source_image) for p in predictions],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=identity.series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="medplug AI results",
        is_complete=True,
    )
