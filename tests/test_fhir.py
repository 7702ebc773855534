"""FHIR R4 DiagnosticReport per study: valid against fhir.resources' R4B models."""

from __future__ import annotations

from datetime import datetime, timezone

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from medplug.contract import Prediction
from medplug.fhir import DICOM_UID_SYSTEM, MODEL_HASH_SYSTEM, diagnostic_report

STUDY_UID = "1.2.826.0.1.3680043.8.498.12345"


def _predictions() -> list[Prediction]:
    image = Prediction(
        plugin="image-classifier",
        plugin_version="0.3.1",
        case_id="c",
        label="lesion",
        probabilities={"no_lesion": 0.2, "lesion": 0.8},
        provenance={"model_sha256": "ab" * 32},
        warnings=["stacked in stored order"],
    )
    failed = Prediction(
        plugin="report-classifier",
        plugin_version="0.1.0",
        case_id="c",
        label=None,
        error={"reason": "missing-input", "message": "no report for this study"},
    )
    return [image, failed]


def test_report_is_valid_r4_and_carries_each_result() -> None:
    issued = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
    document = diagnostic_report(STUDY_UID, _predictions(), "study/../1", issued)
    report = DiagnosticReport.model_validate(document)
    assert report.id == "study-..-1"  # a valid FHIR id ([A-Za-z0-9.-]), whatever the label
    assert report.status == "preliminary"
    (study,) = report.imagingStudy
    assert study.type == "ImagingStudy"
    assert study.identifier.system == DICOM_UID_SYSTEM
    assert study.identifier.value == f"urn:oid:{STUDY_UID}"
    by_id = {resource.id: resource for resource in report.contained}
    assert [ref.reference for ref in report.result] == ["#observation-0", "#observation-1"]

    label = by_id["observation-0"]
    assert label.valueCodeableConcept.coding[0].code == "lesion"
    values = {c.code.text: float(c.valueQuantity.value) for c in label.component}
    assert values == {"probability of no_lesion": 0.2, "probability of lesion": 0.8}
    device = by_id[label.device.reference.lstrip("#")]
    assert device.deviceName[0].name == "image-classifier"
    assert device.version[0].value == "0.3.1"
    assert device.identifier[0].system == MODEL_HASH_SYSTEM
    assert device.identifier[0].value == "ab" * 32

    failed = by_id["observation-1"]
    assert failed.valueCodeableConcept is None
    assert failed.dataAbsentReason.coding[0].code == "error"
    assert (
        "lesion (p=0.80)" in report.conclusion
        and "report-classifier: no result" in report.conclusion
    )


def test_report_has_no_patient_attributes() -> None:
    document = diagnostic_report(STUDY_UID, _predictions(), "s")
    assert "subject" not in document
    assert not any(r["resourceType"] == "Patient" for r in document["contained"])
