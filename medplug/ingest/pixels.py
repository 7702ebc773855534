"""Turn one file's pixel data into stored values, then into rescaled floats.

Native (uncompressed) little-endian slices take the fast path: one
``np.fromfile`` at the offset the header read found, no pydicom parse.
Everything else (compressed, colour, multi-frame, big endian) goes through
pydicom's decoders; a missing decoder is reported by transfer syntax name.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config
from pydicom.uid import UID

from medplug.ingest.deflate import DEFLATED, check_inflated_size
from medplug.ingest.errors import (
    DicomError,
    NotAnImageError,
    UnreadableDicomError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
)
from medplug.ingest.guard import guarded, looks_truncated, quiet_warnings, safe_message
from medplug.ingest.header import DEFER_SIZE, InstanceHeader

GREY = {"MONOCHROME1", "MONOCHROME2"}
_NATIVE_DTYPES = {
    (8, 0): "u1",
    (8, 1): "i1",
    (16, 0): "<u2",
    (16, 1): "<i2",
    (32, 0): "<u4",
    (32, 1): "<i4",
}


def can_read_fast(header: InstanceHeader) -> bool:
    """Whether the slice can be read with one ``np.fromfile`` (native grey, one frame)."""
    if not (header.is_native_little_endian and header.pixel_offset is not None):
        return False
    if header.frames != 1 or header.samples_per_pixel != 1 or header.photometric not in GREY:
        return False
    key = (header.bits_allocated, header.pixel_representation)
    if key not in _NATIVE_DTYPES:
        return False
    needed = header.rows * header.columns * header.bits_allocated // 8
    return header.pixel_length is not None and header.pixel_length >= needed


def read_fast(header: InstanceHeader) -> np.ndarray:
    """Stored values of a native grey slice as (rows, columns), bits above BitsStored cleared."""
    dtype = np.dtype(_NATIVE_DTYPES[(header.bits_allocated, header.pixel_representation)])
    count = header.rows * header.columns
    try:
        raw = np.fromfile(header.path, dtype=dtype, count=count, offset=header.pixel_offset or 0)
    except OSError as exc:
        raise UnreadableDicomError(header.path, f"cannot read pixel data ({exc})") from None
    if raw.size != count:
        raise UnreadableDicomError(
            header.path, f"pixel data truncated: {raw.size} of {count} values present"
        )
    return _clear_unused_bits(raw.reshape(header.rows, header.columns), header)


def _clear_unused_bits(raw: np.ndarray, header: InstanceHeader) -> np.ndarray:
    bits_stored = header.bits_stored or header.bits_allocated
    unused = header.bits_allocated - bits_stored
    if unused <= 0:
        return raw
    cleared: np.ndarray
    if header.pixel_representation:  # sign-extend from BitsStored
        cleared = (raw << unused) >> unused
    else:
        cleared = raw & np.array((1 << bits_stored) - 1, dtype=raw.dtype)
    return cleared


def read_dataset(header: InstanceHeader) -> pydicom.Dataset:
    """The full data set (with pixels) for the decoder path."""
    notes: list[str] = []
    if header.transfer_syntax == DEFLATED:
        check_inflated_size(header.path)  # the file may have changed since its header was read
    try:
        with quiet_warnings(header.path, notes):
            ds = pydicom.dcmread(header.path, force=True, defer_size=DEFER_SIZE)
    except MemoryError:
        raise UnreadableDicomError(
            header.path, "an element declares more bytes than exist"
        ) from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pydicom raises many types on malformed files
        category = "truncated" if looks_truncated(exc) or notes else "unreadable"
        raise DicomError(
            header.path, category, f"cannot read data set ({safe_message(exc)})"
        ) from None
    if any(looks_truncated(note) for note in notes):
        raise DicomError(header.path, "truncated", "data set ends early: " + notes[0])
    with guarded(header.path, "unreadable", "reading the transfer syntax"):
        if not getattr(ds.file_meta, "TransferSyntaxUID", None):
            # Files without File Meta: the decoder needs the syntax the reader detected.
            ds.file_meta.TransferSyntaxUID = UID(transfer_syntax_from_encoding(ds))
        element = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
        # A raw (not yet converted) element knows its declared length; a converted one
        # holds its value already. Deflated files are larger than their on-disk size.
        length = getattr(element, "length", None) if element is not None else None
        encapsulated = element is not None and (
            length == 0xFFFFFFFF or bool(getattr(element, "is_undefined_length", False))
        )
        deflated = str(ds.file_meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99"
    if length is not None and not encapsulated and not deflated and length > header.file_size:
        # Deferred values are read on access: an unchecked lying length allocates up to 4 GiB.
        raise DicomError(
            header.path,
            "truncated",
            f"Pixel Data declares {length} bytes in a {header.file_size}-byte file",
        )
    if encapsulated:
        with guarded(header.path, "unreadable", "reading Pixel Data"):
            value = ds.PixelData
        check_fragments(header.path, value)
    return ds


def check_fragments(path: Path, value: bytes) -> None:
    """Every item of encapsulated Pixel Data is complete.

    pydicom reads a value cut short by the end of the file without a word,
    and decoders often return an image from a partial stream; the item
    lengths say what should be there.
    """
    pos, end = 0, len(value)
    while pos + 8 <= end:
        group, element, length = struct.unpack_from("<HHL", value, pos)
        if (group, element) == (0xFFFE, 0xE0DD):
            return
        if (group, element) != (0xFFFE, 0xE000):
            return  # not item-structured: left to the decoder to judge
        if pos + 8 + length > end:
            raise DicomError(
                path,
                "truncated",
                f"a Pixel Data fragment declares {length} bytes, {end - pos - 8} are present",
            )
        pos += 8 + length


def transfer_syntax_from_encoding(ds: pydicom.Dataset) -> str:
    """The native transfer syntax matching how pydicom actually parsed a meta-less file."""
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        return "1.2.840.10008.1.2"
    return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def check_decoder(path: Path, transfer_syntax: str) -> None:
    """Raise ``UnsupportedTransferSyntaxError`` naming the syntax when no decoder is installed."""
    if not transfer_syntax:
        return
    uid = UID(transfer_syntax, validation_mode=config.IGNORE)
    if not uid.is_transfer_syntax:
        raise UnsupportedTransferSyntaxError(
            path, f"TransferSyntaxUID {str(uid)[:64]} is not a transfer syntax"
        )
    if not uid.is_compressed:
        return
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            path, f"{uid.name} ({uid}) has no decoder in pydicom; convert the file first"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise UnsupportedTransferSyntaxError(
            path, f"{uid.name} ({uid}) needs a decoder that is not installed: {missing}"
        )


def decode_frames(header: InstanceHeader, ds: pydicom.Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns[, samples]) stored values (colour as RGB)."""
    path = header.path
    if not any(tag in ds for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
        if header.has_pixel_data:
            raise UnreadableDicomError(path, "Pixel Data element is truncated or unreadable")
        raise NotAnImageError(path, "no Pixel Data element")
    with guarded(path, "unsupported_transfer_syntax", "reading the transfer syntax"):
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) or header.transfer_syntax
    check_decoder(path, syntax)
    notes: list[str] = []
    try:
        with quiet_warnings(path, notes):
            array = ds.pixel_array
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - Rust decoders panic (pyo3 PanicException)
        category = "truncated" if _says_truncated(exc) else "decode_failed"
        raise DicomError(
            path, category, f"decoding pixel data failed ({safe_message(exc)})"
        ) from None
    with guarded(path, "bad_lookup_table", "applying the lookup table"):
        if "ModalityLUTSequence" in ds and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
            # A lookup table instead of slope/intercept: apply it here, rescale becomes identity.
            from pydicom.pixels.processing import apply_modality_lut

            array = apply_modality_lut(array, ds)
            header.extra["modality_lut"] = True
        colour = int(ds.get("SamplesPerPixel", 1) or 1) > 1
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            from pydicom.pixels.processing import apply_color_lut

            array = apply_color_lut(array, ds)
            colour = True
    with guarded(path, "bad_pixel_description", "reading NumberOfFrames"):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1 and array.ndim == (3 if colour else 2):
        array = array[np.newaxis]
    expected_ndim = 4 if colour else 3
    if array.ndim != expected_ndim:
        raise UnsupportedPixelFormatError(
            path, f"decoded array has shape {array.shape}, expected frames x rows x columns"
        )
    return array


def _says_truncated(exc: BaseException) -> bool:
    """pydicom's wording when the Pixel Data element is shorter than the header promises."""
    text = str(exc).lower()
    return looks_truncated(exc) or "shorter than" in text or "less than expected" in text


def rescale(header: InstanceHeader) -> tuple[float, float]:
    """``(slope, intercept)`` for ``to_float``: identity once a modality LUT was applied.

    The header's RescaleSlope/Intercept (top level or functional groups); a
    missing or zero slope counts as 1 (``checks.check_rescale`` refuses 0 first).
    """
    if header.extra.get("modality_lut"):
        return 1.0, 0.0
    slope = header.rescale_slope
    return (float(slope) if slope not in (None, 0) else 1.0), float(header.rescale_intercept or 0.0)


def to_float(
    stored: np.ndarray,
    out: np.ndarray,
    slope: float,
    intercept: float,
    monochrome1: bool,
    stored_range: tuple[float, float],
) -> None:
    """Write ``stored * slope + intercept`` into ``out``; invert MONOCHROME1 so bright = high."""
    if slope == 1.0:
        out[...] = stored
    else:
        np.multiply(stored, slope, out=out, casting="unsafe")
    if intercept:
        out += intercept
    if monochrome1:
        low, high = stored_range
        np.subtract(slope * (low + high) + 2 * intercept, out, out=out)


def stored_range(header: InstanceHeader) -> tuple[float, float]:
    """Smallest and largest storable value, for MONOCHROME1 inversion."""
    bits = header.bits_stored or header.bits_allocated or 16
    if header.pixel_representation:
        return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    return (0.0, 2.0**bits - 1)
