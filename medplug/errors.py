"""Every error medplug raises on purpose.

Callers (a CLI, a PACS batch job, a viewer) catch ``MedplugError`` and show its
message; anything else escaping is a bug. Messages name the file or case and
the problem, and never include patient data (names, report text, dates).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class MedplugError(Exception):
    """Base class: a clear, user-facing problem with the input or setup."""


class InputError(MedplugError):
    """A case does not meet what a plugin declared it needs."""

    def __init__(self, message: str, *, case_id: str | None = None) -> None:
        self.case_id = case_id
        prefix = f"case {case_id!r}: " if case_id else ""
        super().__init__(prefix + message)


class MissingInputError(InputError):
    """A required modality (image, report, clinical fields) is absent."""


class DicomError(MedplugError):
    """A DICOM file or series cannot be turned into a volume.

    ``category`` is a short, stable machine-readable reason (see
    ``medplug.ingest`` docs) so batch jobs and tests can group failures.
    """

    def __init__(self, path: str | Path | None, category: str, detail: str) -> None:
        self.path = Path(path) if path is not None else None
        self.category = category
        self.detail = detail
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{category}: {detail}")

    def __reduce__(
        self,
    ) -> tuple[Callable[..., DicomError], tuple[type[DicomError], Path | None, str, str]]:
        # Subclasses take fewer arguments; rebuild from the fields so the error
        # crosses process boundaries (batch workers) intact.
        return (_rebuild_dicom_error, (type(self), self.path, self.category, self.detail))


def _rebuild_dicom_error(
    cls: type[DicomError], path: Path | None, category: str, detail: str
) -> DicomError:
    error = cls.__new__(cls)
    DicomError.__init__(error, path, category, detail)
    return error


class SeriesGeometryError(DicomError):
    """Slices do not form one regular volume (gaps, tilt, mixed sizes)."""


class PluginError(MedplugError):
    """A plugin could not be found, loaded or run."""


class PluginNotFoundError(PluginError):
    """No plugin is registered under that name."""


class ModelFileError(MedplugError):
    """A model folder is missing, incomplete, tampered with or unsafe to load."""


class DataError(MedplugError):
    """A training/evaluation dataset is malformed (bad labels, NaNs, wrong shape)."""
