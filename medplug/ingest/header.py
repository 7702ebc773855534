"""Read the few header fields ingest needs from one DICOM file, fast.

A folder scan touches every file, so the header read dominates its time.
``read_header`` walks the data set of little-endian files itself (struct
unpacking, skipping every element it does not need, stopping at Pixel Data)
and falls back to ``pydicom.dcmread(stop_before_pixels=True)`` for anything
unusual: big endian, deflate, no File Meta, multi-frame functional groups.
As a by-product it records where the pixel bytes start, so native
(uncompressed) slices load with one ``np.fromfile`` and no pydicom parse.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from medplug.ingest.errors import (
    DicomError,
    NotDicomError,
    TruncatedDicomError,
    UnreadableDicomError,
)
from medplug.ingest.guard import PASS_THROUGH, looks_truncated, quiet_warnings, safe_message

NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
UNDEFINED = 0xFFFFFFFF
_FIRST_READ = 16 * 1024
# pydicom skips (defers) values longer than this: a header read never needs them, and a
# lying length then costs a seek instead of an allocation of up to 4 GiB.
DEFER_SIZE = 1 << 20
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
_WANTED: dict[int, tuple[str, str]] = {
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
_NEEDS_PYDICOM = {0x52009229, 0x52009230, 0x00281201, 0x00283000}  # functional groups, LUTs


@dataclass
class InstanceHeader:
    """What ingest knows about one DICOM file before reading its pixels."""

    path: Path
    file_size: int = 0
    transfer_syntax: str = ""
    media_sop_class_uid: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    modality: str = ""
    series_description: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    image_type: tuple[str, ...] = ()
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = ""
    planar_configuration: int = 0
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    pixel_spacing: tuple[float, ...] | None = None
    imager_pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    image_position: tuple[float, ...] | None = None
    image_orientation: tuple[float, ...] | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    has_pixel_data: bool = False
    pixel_offset: int | None = None  # byte offset of native pixel values (fast path)
    pixel_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_native_little_endian(self) -> bool:
        return self.transfer_syntax in NATIVE_LITTLE_ENDIAN

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Scans send headers back from worker processes: a flat tuple unpickles ~3x faster.
        return (_rebuild_header, (tuple(self.__dict__.values()),))


_HEADER_FIELDS: tuple[str, ...] = ()


def _rebuild_header(values: tuple[Any, ...]) -> InstanceHeader:
    global _HEADER_FIELDS
    if not _HEADER_FIELDS:
        _HEADER_FIELDS = tuple(InstanceHeader(Path()).__dict__)
    header = object.__new__(InstanceHeader)
    header.__dict__.update(zip(_HEADER_FIELDS, values, strict=True))
    return header


class _NeedMore(Exception):
    """The first read chunk ended before the parser was done."""


class _Unsupported(Exception):
    """The fast parser does not handle this file; use pydicom."""


class _Truncated(Exception):
    """An element's value runs past the end of the file."""


def read_header(path: str | Path) -> InstanceHeader:
    """The header facts of one file; raises a ``DicomError`` (never another exception).

    Categories: ``not_dicom``, ``truncated`` (the file ends inside its header),
    ``unreadable`` (anything else malformed). Library warnings go to the log.
    """
    path = Path(path)
    notes: list[str] = []
    try:
        with quiet_warnings(path, notes):
            return _read_header(path, notes)
    except DicomError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - a parser panic must not escape a scan
        if looks_truncated(exc):
            raise TruncatedDicomError(path, f"header ends early ({safe_message(exc)})") from None
        raise UnreadableDicomError(path, f"malformed header ({safe_message(exc)})") from None


def _read_header(path: Path, notes: list[str]) -> InstanceHeader:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            data = handle.read(_FIRST_READ)
            try:
                return _fast_header(path, data, size, handle)
            except _NeedMore:
                handle.seek(len(data))
                data += handle.read()
                try:
                    return _fast_header(path, data, size, handle)
                except _NeedMore as exc:
                    # The whole file is in memory: an element needing more runs past its end.
                    cut = _Truncated("the file ends inside a data element")
                    cut.series_uid = getattr(exc, "series_uid", "")
                    raise cut from None
    except _Truncated as exc:
        error = TruncatedDicomError(path, str(exc))
        # Where the cut file belonged, if its Series UID came before the cut (see scan).
        error.series_uid = getattr(exc, "series_uid", "")  # type: ignore[attr-defined]
        raise error from None
    except (_Unsupported, _NeedMore, struct.error, ValueError, IndexError):
        return _pydicom_header(path, notes)
    except OSError as exc:
        raise UnreadableDicomError(path, f"cannot read file ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- fast path


def _fast_header(path: Path, data: bytes, size: int, handle: Any = None) -> InstanceHeader:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _Unsupported
    header = InstanceHeader(path=path, file_size=size)
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
            raise _Unsupported
        if elem == 0x0010:
            header.transfer_syntax = _text(data[pos : pos + length])
        elif elem == 0x0002:
            header.media_sop_class_uid = _text(data[pos : pos + length])
        pos += length
    if header.transfer_syntax not in NATIVE_LITTLE_ENDIAN and not _is_le_encapsulated(
        header.transfer_syntax
    ):
        raise _Unsupported  # big endian, deflate, or no transfer syntax
    implicit = header.transfer_syntax == IMPLICIT_LITTLE_ENDIAN
    try:
        _walk_top_level(header, data, pos, implicit, size, handle)
    except (_Truncated, _NeedMore) as exc:
        exc.series_uid = header.series_uid  # type: ignore[attr-defined]
        raise
    if header.frames > 1:
        raise _Unsupported  # per-frame geometry lives in functional groups: let pydicom read it
    return header


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
_TAIL_CHECK_AFTER = max(max(_WANTED), *(t for t in _NEEDS_PYDICOM if t < 0x50000000))
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
    wanted = _WANTED
    long_vrs = _LONG_VRS
    short_vrs = _SHORT_VRS
    checked_tail = False
    first = pos
    while True:
        if pos >= size:
            if pos == first:
                raise _Truncated("the file ends right after its File Meta (no data set)")
            return  # no Pixel Data
        if pos + 8 > end:
            raise _NeedMore
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
                    raise _NeedMore
                length = _unpack_u32(data, pos + 8)[0]
                value_pos = pos + 12
            elif vr.isalpha() and vr.isupper():
                length = _unpack_u16(data, pos + 6)[0]
                value_pos = pos + 8
            else:
                raise _Unsupported  # malformed or mixed encoding
        if tag > _TAIL_CHECK_AFTER and not checked_tail:
            checked_tail = True
            if tag not in PIXEL_TAGS and _native_pixels_at_tail(header, implicit, size, handle):
                return
        if length != UNDEFINED and value_pos + length > size and tag not in PIXEL_TAGS:
            raise _Truncated(
                f"element ({group:04X},{elem:04X}) declares {length} bytes, "
                f"the file ends after {size - value_pos}"
            )
        if tag in PIXEL_TAGS:
            header.has_pixel_data = True
            if length != UNDEFINED:
                header.pixel_offset = value_pos
                header.pixel_length = length
            return
        if tag in _NEEDS_PYDICOM or group > 0x7FE0:
            raise _Unsupported
        if length == UNDEFINED:
            # A sequence (or UN holding an implicit VR sequence): walk its items to the end.
            pos = _skip_undefined(data, value_pos, implicit or vr == b"UN")
            continue
        field_kind = wanted.get(tag)
        if field_kind is not None:
            if value_pos + length > end:
                raise _NeedMore
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
            raise _NeedMore
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
            raise _Unsupported
        raise _Unsupported


def _skip_item(data: bytes, pos: int, implicit: bool) -> int:
    """Position after the item delimiter of an undefined-length item."""
    end = len(data)
    while True:
        if pos + 8 > end:
            raise _NeedMore
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


# --------------------------------------------------------------------------- pydicom path


def _pydicom_header(path: Path, notes: list[str] | None = None) -> InstanceHeader:
    """Header through pydicom, for files the fast parser leaves alone."""
    notes = notes if notes is not None else []
    from medplug.ingest.deflate import check_inflated_size

    check_inflated_size(path)  # pydicom would inflate a deflated data set whole
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as raw_handle:
            handle = ShortReadDetector(raw_handle)
            try:
                ds = pydicom.dcmread(handle, stop_before_pixels=True, defer_size=DEFER_SIZE)
            except InvalidDicomError:
                handle.seek(0)
                ds = pydicom.dcmread(
                    handle, stop_before_pixels=True, force=True, defer_size=DEFER_SIZE
                )
                if not _looks_like_dicom(ds):
                    raise NotDicomError(path) from None
            stopped_at = handle.tell()
            next_tag = handle.read(8)
        if stopped_at > size:
            raise TruncatedDicomError(
                path, f"an element's length runs {stopped_at - size} bytes past the end of the file"
            )
    except (NotDicomError, TruncatedDicomError):
        raise
    except OSError as exc:
        raise UnreadableDicomError(path, f"cannot read file ({exc.strerror or exc})") from None
    except MemoryError:
        # Values over DEFER_SIZE are skipped, so only a lying length gets here.
        raise UnreadableDicomError(path, "an element declares more bytes than exist") from None
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - pydicom raises many types on malformed files
        if looks_truncated(exc) or any(looks_truncated(note) for note in notes):
            raise TruncatedDicomError(path, f"header ends early ({safe_message(exc)})") from None
        raise UnreadableDicomError(path, f"malformed header ({safe_message(exc)})") from None
    try:
        header = header_from_dataset(path, ds, size, next_tag)
        if not header.has_pixel_data and header.transfer_syntax == DEFLATED:
            # In a deflated file the stop position says nothing: look for pixels in a full read.
            full = pydicom.dcmread(path, force=True)
            header.has_pixel_data = any(tag in full for tag in PIXEL_TAGS)
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - values of any VR may be malformed
        raise UnreadableDicomError(path, f"invalid header value ({safe_message(exc)})") from None
    if not header.has_pixel_data and any(looks_truncated(note) for note in notes):
        raise TruncatedDicomError(path, "file ends inside its header: " + notes[0])
    if not header.has_pixel_data and handle.short_read:
        raise TruncatedDicomError(path, "the file ends inside a data element")
    return header


class ShortReadDetector:
    """File wrapper noting a read cut short by the end of the file.

    pydicom accepts a value shorter than its declared length without a word,
    so a file cut inside its header would read as a valid data set without
    pixels. A clean end of file falls between elements: the 4- or 8-byte tag
    read finds nothing. Any other short read means the file was cut.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if size > 0 and len(data) < size and (data or size not in (4, 8)):
            self.short_read = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _looks_like_dicom(ds: pydicom.Dataset) -> bool:
    """A forced read of a non-DICOM file yields junk; real data sets carry these."""
    keys = set(ds.keys())
    return bool(keys) and any(
        tag in keys for tag in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00280010)
    )


def header_from_dataset(
    path: Path, ds: pydicom.Dataset, size: int = 0, next_tag: bytes = b""
) -> InstanceHeader:
    """Fill an ``InstanceHeader`` from a pydicom data set (read with or without pixels)."""
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta else ""
    if not transfer_syntax:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        transfer_syntax = (
            "1.2.840.10008.1.2"
            if implicit
            else "1.2.840.10008.1.2.1"
            if little
            else "1.2.840.10008.1.2.2"
        )
    header = InstanceHeader(path=path, file_size=size, transfer_syntax=transfer_syntax)
    header.media_sop_class_uid = str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    for tag, (name, kind) in _WANTED.items():
        element = ds.get(tag)
        if element is None or element.value is None or element.value == "":
            continue
        setattr(header, name, _from_element(element.value, kind))
    header.frames = max(1, header.frames or 1)
    in_dataset = any(tag in ds for tag in PIXEL_TAGS)
    stopped_at_pixels = len(next_tag) >= 4 and (
        next_tag[:4] in (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
        or next_tag[:4] in (b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")
    )
    header.has_pixel_data = in_dataset or stopped_at_pixels
    _functional_group_geometry(header, ds)
    return header


def _from_element(value: Any, kind: str) -> Any:
    if kind in ("str",):
        return str(value).strip("\x00 ")
    if kind == "strs":
        values = value if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [value]
        if isinstance(value, str):
            values = value.split("\\")
        return tuple(str(v).strip().upper() for v in values if str(v).strip())
    if kind in ("us", "int"):
        if (
            isinstance(value, list | tuple)
            or hasattr(value, "__len__")
            and not isinstance(value, str | bytes)
        ):
            value = value[0]
        if isinstance(value, bytes):
            return struct.unpack_from("<H", value)[0]
        return int(float(value))
    if kind == "float":
        if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
            value = value[0]
        return float(value)
    if kind == "floats":
        values = (
            value if not isinstance(value, str | bytes) and hasattr(value, "__len__") else [value]
        )
        return tuple(float(v) for v in values)
    raise AssertionError(kind)


def _functional_group_geometry(header: InstanceHeader, ds: pydicom.Dataset) -> None:
    """Enhanced multi-frame objects keep geometry and rescale in functional groups."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    first_frame = per_frame[0] if per_frame else None
    for group in (shared, first_frame):
        if group is None:
            continue
        orientation = _first_item(group, "PlaneOrientationSequence")
        if orientation is not None and "ImageOrientationPatient" in orientation:
            header.image_orientation = tuple(float(v) for v in orientation.ImageOrientationPatient)
        measures = _first_item(group, "PixelMeasuresSequence")
        if measures is not None:
            if "PixelSpacing" in measures:
                header.pixel_spacing = tuple(float(v) for v in measures.PixelSpacing)
            if measures.get("SliceThickness") not in (None, ""):
                header.slice_thickness = float(measures.SliceThickness)
            if measures.get("SpacingBetweenSlices") not in (None, ""):
                header.spacing_between_slices = float(measures.SpacingBetweenSlices)
        transform = _first_item(group, "PixelValueTransformationSequence")
        if transform is not None and transform.get("RescaleSlope") not in (None, ""):
            header.rescale_slope = float(transform.RescaleSlope)
            header.rescale_intercept = float(transform.get("RescaleIntercept") or 0.0)
    if first_frame is not None:
        position = _first_item(first_frame, "PlanePositionSequence")
        if position is not None and "ImagePositionPatient" in position:
            header.image_position = tuple(float(v) for v in position.ImagePositionPatient)
        header.extra["functional_groups"] = True


def _first_item(ds: Any, keyword: str) -> Any:
    sequence = ds.get(keyword) if ds is not None else None
    return sequence[0] if sequence else None
