"""The identity and equipment attributes every derived object medplug writes shares."""

from __future__ import annotations

from typing import Any

import medplug
from medplug.dicom_out.sr import MANUFACTURER


def derived_object_attributes(
    plugin: str, plugin_version: str, series_uid: str, series_number: int, sop_uid: str
) -> dict[str, Any]:
    """highdicom keyword arguments naming the object and the model that made it.

    ``device_serial_number`` is Type 1 in the Enhanced General Equipment module of
    PM and SEG; a model has no serial number, so it is a fixed dummy.
    """
    return {
        "series_instance_uid": series_uid,
        "series_number": series_number,
        "sop_instance_uid": sop_uid,
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": f"{plugin} {plugin_version}"[:64],
        "software_versions": f"medplug {medplug.__version__}"[:64],
        "device_serial_number": "0",
    }
