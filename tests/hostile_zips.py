"""Zip archives that lie: what the ``serve`` zip-bomb tests upload.

``lying_bomb`` writes entries of zeros compressed with bzip2 or LZMA and then
overwrites the sizes in both the local headers and the central directory with
small ones, as an attacker would. ``zipfile`` decompresses a bzip2/LZMA chunk
in one call however large it grows, so an unprotected reader allocates the
whole entry at once. ``tests/data/bzip2_bomb_2gib.zip`` was made with
``python tests/hostile_zips.py tests/data/bzip2_bomb_2gib.zip`` (about 20 s).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import sys
import zipfile
import zlib
from pathlib import Path

CHUNK = 1 << 24
LOCAL_HEADER = b"PK\x03\x04"
CENTRAL_HEADER = b"PK\x01\x02"


def lying_bomb(
    path: Path,
    entry_bytes: int,
    entries: int = 1,
    method: int = zipfile.ZIP_BZIP2,
    declared: int = 1024,
) -> Path:
    """``entries`` entries of ``entry_bytes`` zeros each, declaring ``declared`` bytes."""
    stream = _compressed_zeros(entry_bytes, method)
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(entries):
            info = zipfile.ZipInfo(f"slice{index:03d}.dcm")
            info.compress_type = method
            archive.writestr(info, b"\0" * 16)  # placeholder, replaced below
    raw = bytearray(Path(path).read_bytes())
    out = bytearray()
    position = 0
    # Rebuild: each local header gets the real compressed stream and the lying size.
    offsets = []
    for _ in range(entries):
        start = raw.index(LOCAL_HEADER, position)
        name_len, extra_len = struct.unpack_from("<HH", raw, start + 26)
        old_size = struct.unpack_from("<I", raw, start + 18)[0]
        header = bytearray(raw[start : start + 30 + name_len + extra_len])
        struct.pack_into("<III", header, 14, 0, len(stream), declared)  # crc, csize, usize
        offsets.append(len(out))
        out += header + stream
        position = start + 30 + name_len + extra_len + old_size
    central_start = len(out)
    position = raw.index(CENTRAL_HEADER)
    for index in range(entries):
        start = raw.index(CENTRAL_HEADER, position)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, start + 28)
        record = bytearray(raw[start : start + 46 + name_len + extra_len + comment_len])
        struct.pack_into("<III", record, 16, 0, len(stream), declared)
        struct.pack_into("<I", record, 42, offsets[index])
        out += record
        position = start + len(record)
    central_size = len(out) - central_start
    end = bytearray(raw[raw.index(b"PK\x05\x06") :])
    struct.pack_into("<II", end, 12, central_size, central_start)
    out += end
    Path(path).write_bytes(bytes(out))
    return Path(path)


def _compressed_zeros(size: int, method: int) -> bytes:
    if method == zipfile.ZIP_BZIP2:
        compressor = bz2.BZ2Compressor(9)
    elif method == zipfile.ZIP_LZMA:
        compressor = _ZipLzma()
    elif method == zipfile.ZIP_DEFLATED:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    else:
        raise ValueError(f"unsupported method {method}")
    parts = []
    zeros = b"\0" * CHUNK
    left = size
    while left > 0:
        parts.append(compressor.compress(zeros[: min(left, CHUNK)]))
        left -= CHUNK
    parts.append(compressor.flush())
    return b"".join(parts)


class _ZipLzma:
    """LZMA as zip stores it: a 4-byte version/size header, then raw LZMA1 properties."""

    def __init__(self) -> None:
        self._compressor = lzma.LZMACompressor(
            lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1, "preset": 0}]
        )
        props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA1, "preset": 0})  # type: ignore[attr-defined]
        self._header = struct.pack("<BBH", 9, 4, len(props)) + props

    def compress(self, data: bytes) -> bytes:
        header, self._header = self._header, b""
        return header + self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._header + self._compressor.flush()


if __name__ == "__main__":
    lying_bomb(Path(sys.argv[1]), 2 * 1024**3)
