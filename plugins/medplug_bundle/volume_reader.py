"""An ``ImageVolume`` medplug already read, served to a MONAI ``LoadImage`` step.

A bundle's preprocessing starts with ``LoadImaged``: it reads a file and puts a
MetaTensor with the affine and meta data into the dict. medplug has already
read the case (DICOM series or NIfTI, checked, in RAS), so the bundle's own
``LoadImaged`` (its keys, dtype, ``image_only``, ``ensure_channel_first``) is
kept and only its reader is replaced by this one, which returns the volume set
for the current thread. The MetaTensor is built by ``MedplugDicomReader``'s
``get_data``, the same one ``LoadImage(reader=MedplugDicomReader())`` uses.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medplug.contract import ImageVolume
from medplug.errors import PluginError
from medplug.ingest.monai_reader import MedplugDicomReader


class PreloadedVolumeReader(MedplugDicomReader):
    """A MONAI reader whose ``read`` returns the volume given to ``serving``.

    One reader is shared by every thread of a server, so the volume is
    per-thread: each request's transforms read the volume of its own thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def serve(self, volume: ImageVolume | None) -> None:
        """Set (or clear, with None) the volume this thread's next ``read`` returns."""
        self._local.volume = volume

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return True

    def read(self, data: Any, **kwargs: Any) -> ImageVolume:
        volume = getattr(self._local, "volume", None)
        if volume is None:
            raise PluginError("no ingested volume was given to the bundle's LoadImage step")
        return volume
