"""DICOM PS3.15 Basic Application Confidentiality Profile for outputs leaving the hospital.

Applied to the SR and Secondary Capture objects medplug writes (never to the
hospital's own images). Actions follow PS3.15 Table E.1-1: patient name and
ID become a stable pseudonym, instance UIDs are replaced by UIDs derived from
a local secret (so the same study always maps to the same pseudonymous study
and SR, image and JSON stay linked), dates get a dummy value where the IOD
requires one and are emptied otherwise, other identifying attributes are
emptied or removed, private tags go. The map from pseudonyms back to real
identifiers stays in a local SQLite file that never leaves the site.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Sequence as Sequence_
from pathlib import Path
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

DUMMY_DATE, DUMMY_TIME = "19000101", "000000"
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# PS3.15 Table E.1-1, the attributes found in medplug's SR and SC outputs and their sources.
REMOVE = {
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "StudyDescription",
    "SeriesDescription",
    "AdmittingDiagnosesDescription",
    "ProtocolName",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "IssuerOfPatientID",
    "PatientBirthTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "ImageComments",
    "InstitutionCodeSequence",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientState",
}
EMPTY = {  # Z: type 2 attributes kept present but empty
    "AccessionNumber",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "VerifyingObserverName",
}
DUMMY = {  # D: type 1 in SR/SC (dates) or in PM/SEG (Enhanced General Equipment), kept as dummies
    "DeviceSerialNumber": "0",
    "ContentDate": DUMMY_DATE,
    "ContentTime": DUMMY_TIME,
    "ObservationDateTime": "19000101000000",
    "VerificationDateTime": "19000101000000",
    "ContributionDateTime": "19000101000000",
}
KEEP_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID",
             "TransferSyntaxUID", "ImplementationClassUID", "CodingSchemeUID"}  # fmt: skip


class PseudonymMap:
    """A local SQLite table from real identifiers to pseudonyms, consistent across runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pseudonyms (kind TEXT, original TEXT, "
                "pseudonym TEXT, PRIMARY KEY (kind, original))"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(16),)
            )
        (secret,) = self._db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
        self._secret = secret.encode()

    def close(self) -> None:
        self._db.close()

    def pseudonym(self, kind: str, original: str) -> str:
        """The pseudonym for ``original``; derived from the secret, recorded for lookup."""
        digest = hmac.new(self._secret, f"{kind}:{original}".encode(), hashlib.sha256)
        if kind == "uid":
            value = generate_uid(entropy_srcs=[digest.hexdigest()])
        else:
            value = f"MP{digest.hexdigest()[:14].upper()}"
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO pseudonyms VALUES (?, ?, ?)", (kind, original, value)
            )
        return value

    def original(self, kind: str, pseudonym: str) -> str | None:
        row = self._db.execute(
            "SELECT original FROM pseudonyms WHERE kind = ? AND pseudonym = ?", (kind, pseudonym)
        ).fetchone()
        return row[0] if row else None


def deidentify(dataset: Dataset, pseudonyms: PseudonymMap) -> Dataset:
    """Apply the basic profile in place (and return ``dataset``)."""
    patient_id = str(dataset.get("PatientID", "") or "")
    pseudo_patient = pseudonyms.pseudonym("patient", patient_id) if patient_id else "ANONYMOUS"
    _clean(dataset, pseudonyms)
    dataset.PatientName = pseudo_patient
    dataset.PatientID = pseudo_patient
    if "file_meta" in dataset.__dict__ and "MediaStorageSOPInstanceUID" in dataset.file_meta:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = "DICOM PS3.15 Basic Application Confidentiality Profile"
    method = Dataset()
    method.CodeValue, method.CodingSchemeDesignator, method.CodeMeaning = BASIC_PROFILE_CODE
    dataset.DeidentificationMethodCodeSequence = Sequence([method])
    return dataset


def _clean(dataset: Dataset, pseudonyms: PseudonymMap) -> None:
    dataset.remove_private_tags()
    for element in list(dataset):
        keyword = element.keyword
        if keyword in REMOVE or (element.tag.group & 0xFF00) in (0x5000, 0x6000):
            del dataset[element.tag]
        elif keyword in EMPTY:
            element.value = None
        elif keyword in DUMMY:
            element.value = DUMMY[keyword]
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, pseudonyms)
        elif element.VR == "UI" and keyword not in KEEP_UIDS and element.value:
            element.value = _remap_uid(element.value, pseudonyms)
        elif element.VR == "PN" and keyword != "PatientName" and element.value:
            element.value = "ANONYMOUS"


def _remap_uid(value: str | list[str], pseudonyms: PseudonymMap) -> str | list[str]:
    """Instance UIDs get pseudonyms; well-known UIDs (classes, syntaxes) stay."""
    if isinstance(value, list) or hasattr(value, "__iter__") and not isinstance(value, str):
        return [_remap_uid(str(v), pseudonyms) for v in value]  # type: ignore[misc]
    value = str(value)
    return value if value in UID_dictionary else pseudonyms.pseudonym("uid", value)


# --------------------------------------------------------------------------- report words

# How the tokens of dates, IDs, phone numbers and e-mails are written: no space
# before closing punctuation, none after joining punctuation (a second reading
# also runs "." and ":" tight, for e-mail addresses, 03.04.2021 and 10:30).
_NO_SPACE_BEFORE = set("-/.:,#@)")
_NO_SPACE_AFTER = set("-/#@(")
_NO_SPACE_AFTER_TIGHT = _NO_SPACE_AFTER | set(".:")


def scrub_token_attributions(
    attributions: Sequence_[tuple[str, float]],
) -> list[tuple[str, float]]:
    """Report-word attributions with every token that is part of PHI replaced by ``XXXX``.

    The tokens are joined back into text (word pieces merged, punctuation kept
    tight, so a date split into ``2021`` ``-`` ``03`` ``-`` ``04`` reads as one)
    and ``medplug.phi.scrub`` runs on a few readings of it (also title-cased,
    because uncased models lower-case the names it looks for after a title).
    A token is replaced when any of its characters was scrubbed in any reading,
    or when it is PHI on its own. The scores stay, so the explanation still
    says which words mattered.
    """
    from medplug.phi import PLACEHOLDER, scrub

    tokens = [token for token, _ in attributions]
    hit = [scrub(token) != token for token in tokens]
    for no_space_after in (_NO_SPACE_AFTER, _NO_SPACE_AFTER_TIGHT):
        text, spans = _detokenize(tokens, no_space_after)
        for reading in (text, text.title()):  # title() keeps ASCII offsets
            changed = _changed_characters(reading, scrub(reading))
            hit = [h or any(changed[a:b]) for h, (a, b) in zip(hit, spans, strict=True)]
    return [
        (PLACEHOLDER if phi else token, score)
        for (token, score), phi in zip(attributions, hit, strict=True)
    ]


def _detokenize(tokens: list[str], no_space_after: set[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text from tokens, with each token's character span in it."""
    text, spans = "", []
    for token in tokens:
        piece = token[2:] if token.startswith("##") else token
        tight = (
            not text
            or token.startswith("##")
            or piece in _NO_SPACE_BEFORE
            or text[-1] in no_space_after
        )
        if not tight:
            text += " "
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


def _changed_characters(before: str, after: str) -> list[bool]:
    """Which characters of ``before`` a substitution replaced on the way to ``after``."""
    import difflib

    changed = [False] * len(before)
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            changed[i1:i2] = [True] * (i2 - i1)
        elif tag == "insert" and i1 < len(before):
            changed[i1] = True
    return changed


# --------------------------------------------------------------------------- plugin provenance

_UID = re.compile(r"^[0-9]+(\.[0-9]+){2,}$")
REMOVED = "removed (de-identified)"


def deidentify_provenance(value: Any, pseudonyms: PseudonymMap, key: str = "") -> Any:
    """A plugin's provenance fit to leave the hospital.

    Plugins record what they read (input study and series UIDs, the input
    folder, ...). DICOM UIDs get the same pseudonyms as the SR; paths to the
    input are removed, because hospital folders are often named after
    patients (model folders stay: they say which model ran); other text goes
    through ``medplug.phi.scrub``.
    """
    from medplug.phi import scrub

    if isinstance(value, dict):
        return {k: deidentify_provenance(v, pseudonyms, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [deidentify_provenance(v, pseudonyms, key) for v in value]
    if not isinstance(value, str):
        return value
    if _UID.match(value):
        return pseudonyms.pseudonym("uid", value)
    if ("/" in value or "\\" in value) and "model" not in key.lower():
        return REMOVED
    return scrub(value)
