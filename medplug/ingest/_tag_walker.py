"""Byte-level fast path of ``header.read_header``: walk a little-endian file, decode few tags.

A folder scan touches every file, so the header read dominates its time. This
walks the top-level data set of explicit or implicit VR little-endian files
with struct unpacking, decodes only the tags in ``WANTED``, skips every other
element (sequences of undefined length included) and stops at Pixel Data,
recording where native pixel bytes start. Anything unusual (big endian,
deflate, functional groups, lookup tables, malformed encodings) raises
``Unsupported`` and ``header.py`` reads the file with pydicom instead.
Private to ingest: nothing outside ``header.py`` should call it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from medplug.ingest.header import InstanceHeader

NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}

# tag -> (field name, kind); kinds: str, strs (list), int (IS), float (DS), floats, us
WANTED: dict[int, tuple[str, str]] = {
    0x00080008: ("image_type", "strs"),
    0x00080016: ("sop_class_uid", "str"),
    0x00080018: ("sop_instance_uid", "str"),
    0x00080060: ("modality", "str"),
    0x0008103E: ("series_description", "str"),
    0x00180050: ("slice_thickness", "float"),
    0x00180088: ("spacing_between_slices", "float"),
    0x00181164: ("imager_pixel_spacing", "floats"),
    0x0020000D: ("study_uid", "str"),
    0x0020000E: ("series_uid", "str"),
    0x00200011: ("series_number", "int"),
    0x00200013: ("instance_number", "int"),
    0x00200032: ("image_position", "floats"),
    0x00200037: ("image_orientation", "floats"),
    0x00280002: ("samples_per_pixel", "us"),
    0x00280004: ("photometric", "str"),
    0x00280006: ("planar_configuration", "us"),
    0x00280008: ("frames", "int"),
    0x00280010: ("rows", "us"),
    0x00280011: ("columns", "us"),
    0x00280030: ("pixel_spacing", "floats"),
    0x00280100: ("bits_allocated", "us"),
    0x00280101: ("bits_stored", "us"),
    0x00280103: ("pixel_representation", "us"),
    0x00281052: ("rescale_intercept", "float"),
    0x00281053: ("rescale_slope", "float"),
}
# Elements whose presence means the fast path cannot describe the file fully.
NEEDS_PYDICOM = {0x52009229, 0x52009230, 0x00281201, 0x00283000}  # functional groups, LUTs


class NeedMore(Exception):
    """The first read chunk ended before the parser was done."""

    series_uid = ""  # where a cut file belonged, when its Series UID came before the cut


class Unsupported(Exception):
    """The fast parser does not handle this file; use pydicom."""


class Truncated(Exception):
    """An element's value runs past the end of the file."""

    series_uid = ""


def walk_file(header: InstanceHeader, data: bytes, handle: BinaryIO | None = None) -> None:
    """Fill ``header`` from the first bytes of its file (``data``), or raise.

    ``NeedMore``: ``data`` ends before the walk does (read the rest, call again);
    ``Unsupported``: leave this file to pydicom; ``Truncated``: an element runs
    past the end of the file. ``handle`` (the open file) lets the walk check the
    file's tail for native Pixel Data instead of walking every element before it.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unsupported
    size = header.file_size
    pos = 132
    # File Meta group (always explicit VR little endian).
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<L", data, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if length == UNDEFINED:
            raise Unsupported
        if elem == 0x0010:
            header.transfer_syntax = _text(data[pos : pos + length])
        elif elem == 0x0002:
            header.media_sop_class_uid = _text(data[pos : pos + length])
        pos += length
    if header.transfer_syntax not in NATIVE_LITTLE_ENDIAN and not _is_le_encapsulated(
        header.transfer_syntax
    ):
        raise Unsupported  # big endian, deflate, or no transfer syntax
    implicit = header.transfer_syntax == IMPLICIT_LITTLE_ENDIAN
    try:
        _walk_top_level(header, data, pos, implicit, size, handle)
    except (Truncated, NeedMore) as exc:
        exc.series_uid = header.series_uid
        raise
    if header.frames > 1:
        raise Unsupported  # per-frame geometry lives in functional groups: let pydicom read it


def _is_le_encapsulated(uid: str) -> bool:
    """Compressed syntaxes: data set is explicit VR little endian, pixels encapsulated."""
    return uid.startswith("1.2.840.10008.1.2.4.") or uid in {
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.8.1",
    }


_SHORT_VRS = {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FD",
    b"FL",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"SL",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"US",
}
# Past this tag nothing ingest reads follows, so the tail check may end the walk.
_TAIL_CHECK_AFTER = max(max(WANTED), *(t for t in NEEDS_PYDICOM if t < 0x50000000))
_unpack_tag = struct.Struct("<HH").unpack_from
_unpack_u32 = struct.Struct("<L").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from


def _walk_top_level(
    header: InstanceHeader, data: bytes, pos: int, implicit: bool, size: int, handle: Any
) -> None:
    """Walk top-level elements, decode the wanted ones, stop at Pixel Data.

    Written for speed (it runs once per file of a scan): locals bound, one
    dict lookup per element, and once past the last wanted tag a direct check
    whether the file ends with the expected native Pixel Data element.
    """
    end = len(data)
    wanted = WANTED
    long_vrs = _LONG_VRS
    short_vrs = _SHORT_VRS
    checked_tail = False
    first = pos
    while True:
        if pos >= size:
            if pos == first:
                raise Truncated("the file ends right after its File Meta (no data set)")
            return  # no Pixel Data
        if pos + 8 > end:
            raise NeedMore
        group, elem = _unpack_tag(data, pos)
        tag = (group << 16) | elem
        if implicit:
            vr = b""
            length = _unpack_u32(data, pos + 4)[0]
            value_pos = pos + 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in short_vrs:
                length = _unpack_u16(data, pos + 6)[0]
                value_pos = pos + 8
            elif vr in long_vrs:
                if pos + 12 > end:
                    raise NeedMore
                length = _unpack_u32(data, pos + 8)[0]
                value_pos = pos + 12
            elif vr.isalpha() and vr.isupper():
                length = _unpack_u16(data, pos + 6)[0]
                value_pos = pos + 8
            else:
                raise Unsupported  # malformed or mixed encoding
        if tag > _TAIL_CHECK_AFTER and not checked_tail:
            checked_tail = True
            if tag not in PIXEL_TAGS and _native_pixels_at_tail(header, implicit, size, handle):
                return
        if length != UNDEFINED and value_pos + length > size and tag not in PIXEL_TAGS:
            raise Truncated(
                f"element ({group:04X},{elem:04X}) declares {length} bytes, "
                f"the file ends after {size - value_pos}"
            )
        if tag in PIXEL_TAGS:
            header.has_pixel_data = True
            if length != UNDEFINED:
                header.pixel_offset = value_pos
                header.pixel_length = length
            return
        if tag in NEEDS_PYDICOM or group > 0x7FE0:
            raise Unsupported
        if length == UNDEFINED:
            # A sequence (or UN holding an implicit VR sequence): walk its items to the end.
            pos = _skip_undefined(data, value_pos, implicit or vr == b"UN")
            continue
        field_kind = wanted.get(tag)
        if field_kind is not None:
            if value_pos + length > end:
                raise NeedMore
            setattr(
                header, field_kind[0], _decode(data[value_pos : value_pos + length], field_kind[1])
            )
        pos = value_pos + length


def _native_pixels_at_tail(header: InstanceHeader, implicit: bool, size: int, handle: Any) -> bool:
    """Whether the file ends with a native Pixel Data element of the expected length.

    Nearly every native file does; confirming it with one small read skips
    walking the (often many, often private) elements between the image
    module and the pixels.
    """
    if header.transfer_syntax not in NATIVE_LITTLE_ENDIAN or handle is None:
        return False
    if not (header.rows and header.columns and header.bits_allocated in (8, 16, 32, 64)):
        return False
    frames = header.frames or 1
    samples = header.samples_per_pixel or 1
    length = header.rows * header.columns * frames * samples * header.bits_allocated // 8
    length += length % 2
    header_length = 8 if implicit else 12
    start = size - length - header_length
    if start <= 132:
        return False
    handle.seek(start)
    element = handle.read(header_length)
    if len(element) != header_length or element[:4] != b"\xe0\x7f\x10\x00":
        return False
    if implicit:
        found = _unpack_u32(element, 4)[0]
    else:
        if element[4:6] not in (b"OW", b"OB") or element[6:8] != b"\x00\x00":
            return False
        found = _unpack_u32(element, 8)[0]
    if found != length:
        return False
    header.has_pixel_data = True
    header.pixel_offset = start + header_length
    header.pixel_length = length
    return True


def _skip_undefined(data: bytes, pos: int, implicit: bool) -> int:
    """Position after the sequence delimiter of an undefined-length sequence."""
    end = len(data)
    while True:
        if pos + 8 > end:
            raise NeedMore
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if group == 0xFFFE:
            if elem == 0xE0DD:  # sequence delimiter
                return pos
            if elem == 0xE000:  # item
                if length == UNDEFINED:
                    pos = _skip_item(data, pos, implicit)
                else:
                    pos += length
                continue
            raise Unsupported
        raise Unsupported


def _skip_item(data: bytes, pos: int, implicit: bool) -> int:
    """Position after the item delimiter of an undefined-length item."""
    end = len(data)
    while True:
        if pos + 8 > end:
            raise NeedMore
        group, elem = struct.unpack_from("<HH", data, pos)
        if group == 0xFFFE and elem == 0xE00D:
            return pos + 8
        if implicit:
            length = struct.unpack_from("<L", data, pos + 4)[0]
            pos += 8
            vr = b""
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                length = struct.unpack_from("<L", data, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                pos += 8
        if length == UNDEFINED:
            pos = _skip_undefined(data, pos, implicit or vr == b"UN")
        else:
            pos += length


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").strip("\x00 ")


def _decode(raw: bytes, kind: str) -> Any:
    if kind == "us":
        return struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else 0
    text = _text(raw)
    if kind == "str":
        return text
    parts = [part.strip() for part in text.split("\\")]
    if kind == "strs":
        return tuple(part.upper() for part in parts if part)
    if not text:
        return None
    if kind == "int":
        return int(float(parts[0]))
    if kind == "float":
        return float(parts[0])
    if kind == "floats":
        return tuple(float(part) for part in parts)
    raise AssertionError(kind)
