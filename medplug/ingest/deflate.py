"""A bound on Deflated Explicit VR Little Endian files before pydicom reads them.

pydicom inflates a deflated data set whole, in memory, even to read its header
(``stop_before_pixels`` cannot stop early inside a compressed stream). Deflate
reaches about 1000:1 on blank data, so a 4 MiB file can hold a 4 GiB data set.
Here the stream is inflated in bounded chunks, counting and discarding, and a
file that would inflate past the bound is refused as ``too_large`` before any
full read. The bound is the smaller of the volume bound (``checks.max_volume_bytes``)
and 1 GiB (``MEDPLUG_MAX_DEFLATED_BYTES``): deflate is a rare syntax for small
objects, and even a header scan pays the whole inflated size.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from medplug.ingest.errors import DicomError

DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_DEFLATED_ENV = "MEDPLUG_MAX_DEFLATED_BYTES"
DEFAULT_MAX_DEFLATED_BYTES = 1 << 30
HEADER_ALLOWANCE = 64 << 20  # a data set's non-pixel elements, beyond the volume bound
_CHUNK = 1 << 20
_MAX_OUT = 16 << 20  # inflated bytes per step: memory stays at a few MiB


def check_inflated_size(path: Path) -> None:
    """Refuse a deflated file whose data set inflates past the bound; others pass untouched."""
    from medplug.ingest.checks import max_volume_bytes

    body_start = _deflated_body_offset(path)
    if body_start is None:
        return
    deflated_bound = int(os.environ.get(MAX_DEFLATED_ENV, DEFAULT_MAX_DEFLATED_BYTES))
    limit = min(max_volume_bytes(), deflated_bound) + HEADER_ALLOWANCE
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(body_start)
            while chunk := handle.read(_CHUNK):
                data = chunk
                while data:
                    total += len(inflater.decompress(data, _MAX_OUT))
                    if total > limit:
                        raise DicomError(
                            path,
                            "too_large",
                            f"the deflated data set inflates to over {limit >> 20} MiB "
                            f"({MAX_DEFLATED_ENV}, MEDPLUG_MAX_VOLUME_BYTES)",
                        )
                    # At the stream's end, bytes after it (a padding byte) can stay in
                    # ``unconsumed_tail`` forever while each call returns nothing: stop
                    # at ``eof``, not when the tail is empty.
                    if inflater.eof:
                        return
                    data = inflater.unconsumed_tail
    except (OSError, zlib.error):
        return  # unreadable or corrupt: the reader that follows names it


def _deflated_body_offset(path: Path) -> int | None:
    """Where the deflated data set starts, or None when the file is not deflated."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as handle:
            if read_preamble(handle, force=True) is None:
                return None
            meta = _read_file_meta_info(handle)
            if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
                return None
            return handle.tell()
    except Exception:  # noqa: BLE001 - not a readable File Meta: not ours to judge here
        return None
