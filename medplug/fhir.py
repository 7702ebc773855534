"""A study's predictions as a FHIR R4 ``DiagnosticReport``, for the EHR side.

The report is one self-contained resource: each plugin's result is a
``contained`` ``Observation`` (the label as a coded value, each probability as a
component), each model a ``contained`` ``Device`` (name, version and the SHA-256
of its weights, so a result can be traced to the exact model), and the study an
``ImagingStudy`` reference by its Study Instance UID (``urn:dicom:uid``). No
patient attributes are copied: the receiving system links the report to its
patient through the study. Status is ``preliminary``: no one has reviewed an AI
result yet. Plain dicts, so writing one needs no FHIR library; the tests
validate them with ``fhir.resources``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from medplug.contract import Prediction

DICOM_UID_SYSTEM = "urn:dicom:uid"
PLUGIN_SYSTEM = "urn:medplug:plugin"
LABEL_SYSTEM = "urn:medplug:label"
MODEL_HASH_SYSTEM = "urn:medplug:model-sha256"
DATA_ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DIAGNOSTIC_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
IMAGING_STUDY_LOINC = ("18748-4", "Diagnostic imaging study")
RADIOLOGY = {"system": DIAGNOSTIC_SERVICE_SYSTEM, "code": "RAD", "display": "Radiology"}
PROBABILITY_UNIT = {"unit": "1", "system": UCUM, "code": "1"}


def diagnostic_report(
    study_uid: str,
    predictions: Sequence[Prediction],
    report_id: str,
    issued: datetime | None = None,
) -> dict[str, Any]:
    """The FHIR R4 ``DiagnosticReport`` for one study's ``predictions`` (one per plugin)."""
    issued_at = (issued or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    contained: list[dict[str, Any]] = []
    results = []
    for index, prediction in enumerate(predictions):
        device_id = f"device-{index}"
        observation_id = f"observation-{index}"
        contained.append(_device(device_id, prediction))
        contained.append(_observation(observation_id, device_id, prediction, issued_at))
        results.append({"reference": f"#{observation_id}"})
    code, display = IMAGING_STUDY_LOINC
    return {
        "resourceType": "DiagnosticReport",
        "id": _fhir_id(report_id),
        "contained": contained,
        "status": "preliminary",
        "category": [{"coding": [RADIOLOGY]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "issued": issued_at,
        "imagingStudy": [_study_reference(study_uid)],
        "result": results,
        "conclusion": _conclusion(predictions),
    }


def _device(device_id: str, prediction: Prediction) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id,
        "deviceName": [{"name": prediction.plugin, "type": "model-name"}],
        "version": [{"value": prediction.plugin_version}],
    }
    model_hash = prediction.provenance.get("model_sha256")
    if model_hash:
        device["identifier"] = [{"system": MODEL_HASH_SYSTEM, "value": str(model_hash)}]
    return device


def _observation(
    observation_id: str, device_id: str, prediction: Prediction, issued_at: str
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "preliminary",
        "code": {
            "coding": [{"system": PLUGIN_SYSTEM, "code": prediction.plugin}],
            "text": f"{prediction.plugin} {prediction.plugin_version} result",
        },
        "issued": issued_at,
        "device": {"reference": f"#{device_id}"},
    }
    if prediction.failed or prediction.label is None:
        reason = (prediction.error or {}).get("message", "no label")
        observation["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_SYSTEM, "code": "error", "display": "Error"}],
            "text": reason,
        }
        return observation
    observation["valueCodeableConcept"] = {
        "coding": [
            {
                "system": f"{LABEL_SYSTEM}:{prediction.plugin}",
                "code": prediction.label,
                "display": prediction.label,
            }
        ],
        "text": prediction.label,
    }
    observation["component"] = [
        {
            "code": {"text": f"probability of {label}"},
            "valueQuantity": {"value": round(float(p), 6), **PROBABILITY_UNIT},
        }
        for label, p in prediction.probabilities.items()
    ]
    if prediction.warnings:
        observation["note"] = [{"text": warning} for warning in prediction.warnings]
    return observation


def _study_reference(study_uid: str) -> dict[str, Any]:
    return {
        "type": "ImagingStudy",
        "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"},
    }


def _conclusion(predictions: Sequence[Prediction]) -> str:
    parts = []
    for prediction in predictions:
        if prediction.failed or prediction.label is None:
            parts.append(f"{prediction.plugin}: no result")
        else:
            p = prediction.probabilities.get(prediction.label)
            shown = f" (p={p:.2f})" if p is not None else ""
            parts.append(f"{prediction.plugin}: {prediction.label}{shown}")
    return "AI result, not reviewed: " + "; ".join(parts)


def _fhir_id(text: str) -> str:
    """A valid FHIR id (``[A-Za-z0-9\\-\\.]{1,64}``) from any label."""
    cleaned = re.sub(r"[^A-Za-z0-9\-.]", "-", text)[:64]
    return cleaned or "report"
