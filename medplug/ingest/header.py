"""Read the few header fields ingest needs from one DICOM file, fast.

A folder scan touches every file, so the header read dominates its time.
``read_header`` walks the data set of little-endian files itself
(``_tag_walker``: struct unpacking, skipping every element it does not need,
stopping at Pixel Data) and falls back to ``pydicom.dcmread(stop_before_pixels=True)`` for anything
unusual: big endian, deflate, no File Meta, multi-frame functional groups.
As a by-product it records where the pixel bytes start, so native
(uncompressed) slices load with one ``np.fromfile`` and no pydicom parse.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from medplug.ingest._tag_walker import (
    NATIVE_LITTLE_ENDIAN,
    PIXEL_TAGS,
    WANTED,
    NeedMore,
    Truncated,
    Unsupported,
    walk_file,
)
from medplug.ingest.errors import (
    DicomError,
    NotDicomError,
    TruncatedDicomError,
    UnreadableDicomError,
)
from medplug.ingest.functional_groups import frame_values
from medplug.ingest.guard import PASS_THROUGH, looks_truncated, quiet_warnings, safe_message

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"
_FIRST_READ = 16 * 1024
# pydicom skips (defers) values longer than this: a header read never needs them, and a
# lying length then costs a seek instead of an allocation of up to 4 GiB.
DEFER_SIZE = 1 << 20


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
            except NeedMore:
                handle.seek(len(data))
                data += handle.read()
                try:
                    return _fast_header(path, data, size, handle)
                except NeedMore as exc:
                    # The whole file is in memory: an element needing more runs past its end.
                    cut = Truncated("the file ends inside a data element")
                    cut.series_uid = exc.series_uid
                    raise cut from None
    except Truncated as exc:
        error = TruncatedDicomError(path, str(exc))
        # Where the cut file belonged, if its Series UID came before the cut (see scan).
        error.series_uid = exc.series_uid
        raise error from None
    except (Unsupported, NeedMore, struct.error, ValueError, IndexError):
        return _pydicom_header(path, notes)
    except OSError as exc:
        raise UnreadableDicomError(path, f"cannot read file ({exc.strerror or exc})") from None


def _fast_header(
    path: Path, data: bytes, size: int, handle: BinaryIO | None = None
) -> InstanceHeader:
    """The byte-level walk (``_tag_walker``) for the common little-endian files."""
    header = InstanceHeader(path=path, file_size=size)
    walk_file(header, data, handle)
    return header


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

    def __init__(self, handle: BinaryIO) -> None:
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
    for tag, (name, kind) in WANTED.items():
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
    """Enhanced multi-frame objects keep geometry and rescale in functional groups.

    The first frame's own group wins over the shared one, which wins over the
    top-level attributes; the position comes from the first frame's group only.
    """
    values, per_frame = frame_values(ds, 0, shared_position=False)
    if values.orientation is not None:
        header.image_orientation = values.orientation
    if values.spacing is not None:
        header.pixel_spacing = values.spacing
    if values.slice_thickness is not None:
        header.slice_thickness = values.slice_thickness
    if values.spacing_between_slices is not None:
        header.spacing_between_slices = values.spacing_between_slices
    if values.rescale is not None:
        header.rescale_slope, header.rescale_intercept = values.rescale
    if per_frame:
        if values.position is not None:
            header.image_position = values.position
        header.extra["functional_groups"] = True
