"""Fetch a study named by UID from the one DICOMweb server this API is configured with.

The base URL is fixed at start-up (``--dicomweb-url``); requests only name UIDs,
so a caller can never make the server fetch from an address of their choosing.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import HTTPException

from medplug.errors import MedplugError

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class DicomwebFetchError(MedplugError):
    """The configured DICOMweb server could not deliver the study."""


def check_uid(value: str, what: str) -> str:
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise HTTPException(422, f"{what} is not a valid DICOM UID")
    return value


def fetch_study(
    base_url: str, study_uid: str, series_uid: str | None, folder: Path, max_files: int
) -> Path:
    """WADO-RS retrieve the study (or one series) into ``folder``; returns the folder."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=base_url)
    try:
        if series_uid:
            instances = client.retrieve_series(study_uid, series_uid)
        else:
            instances = client.retrieve_study(study_uid)
    except Exception as exc:  # requests/HTTP errors: report the status, not the URL's payload
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise DicomwebFetchError(
            f"DICOMweb retrieve failed ({type(exc).__name__}"
            + (f", HTTP {status}" if status else "")
            + ")"
        ) from exc
    if not instances:
        raise DicomwebFetchError("DICOMweb server returned no instances for that study")
    if len(instances) > max_files:
        raise HTTPException(413, f"study has {len(instances)} instances; the limit is {max_files}")
    folder.mkdir(parents=True, exist_ok=True)
    for index, dataset in enumerate(instances):
        dataset.save_as(folder / f"{index:05d}.dcm", enforce_file_format=True)
    return folder
