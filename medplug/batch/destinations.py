"""Where results go back to: a DICOMweb server (STOW-RS) or a DICOM node (C-STORE).

``parse_destination`` turns the command-line form into one: ``http(s)://...``
is a DICOMweb base URL, ``AE@host:port`` a DIMSE peer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset

from medplug.batch.dicomweb import RetryCount, RetryPolicy, store_instances
from medplug.errors import MedplugError

DIMSE_PATTERN = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d+)$")


class PushError(MedplugError):
    """Results could not be delivered to the destination (``retries``: network retries spent)."""

    def __init__(self, message: str, retries: int = 0) -> None:
        super().__init__(message)
        self.retries = retries


class Destination(Protocol):
    description: str

    def send(self, datasets: Sequence[Dataset]) -> int | None:
        """Deliver ``datasets``; returns the network retries it took (None: not counted)."""
        ...


@dataclass
class DicomwebDestination:
    """STOW-RS to a DICOMweb base URL, retried on transient failures (``dicomweb``)."""

    url: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def description(self) -> str:
        return f"STOW-RS {self.url}"

    def send(self, datasets: Sequence[Dataset]) -> int:
        count = RetryCount()
        try:
            store_instances(self.url, list(datasets), self.retry, count)
        except Exception as exc:
            raise PushError(str(exc), count.retries) from exc
        return count.retries


@dataclass
class DimseDestination:
    """C-STORE to a DICOM node, as calling AE ``calling_ae``."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "MEDPLUG"

    @property
    def description(self) -> str:
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"

    def send(self, datasets: Sequence[Dataset]) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for sop_class, syntax in {
            (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
        }:
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise PushError(f"{self.description}: association rejected or peer unreachable")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise PushError(
                        f"{self.description}: C-STORE refused "
                        f"(status {hex(code) if code is not None else 'none'})"
                    )
        finally:
            assoc.release()


def parse_destination(
    text: str, calling_ae: str = "MEDPLUG", retry: RetryPolicy | None = None
) -> Destination:
    """``http(s)://base`` -> STOW-RS; ``AE@host:port`` -> C-STORE."""
    if text.startswith(("http://", "https://")):
        return DicomwebDestination(text.rstrip("/"), retry or RetryPolicy())
    match = DIMSE_PATTERN.match(text)
    if match:
        return DimseDestination(
            match["ae"], match["host"], int(match["port"]), calling_ae=calling_ae
        )
    raise MedplugError(f"destination {text!r} is neither an http(s) URL nor AE@host:port")
