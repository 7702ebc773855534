"""Generate a corpus of malformed DICOM inputs from pydicom's own test files.

Nothing here is a copied binary: every input is derived, deterministically
(seeded), from ``pydicom.data.get_testdata_file(...)`` by one mutation:

- header edits through pydicom: non-transfer-syntax UIDs, 2-value positions,
  1-value spacing, NaN/zero/inf geometry and rescale, zero Rows/Columns,
  BitsStored 65535, huge Rows x Columns, broken palette lookup tables;
- byte edits: truncations at many offsets, bit flips in the header, lying
  element lengths, unknown VRs;
- compressed streams: RLE headers and segments, JPEG, JPEG-LS and JPEG 2000
  codestreams corrupted or cut;
- folders: a NaN slice in a stack, duplicate instances (byte-identical, and
  one image in three transfer syntaxes), a 65535 x 65535 stack;
- not DICOM at all: empty, text, random bytes, a fake ``.nii.gz``;
- regressions found by ``make fuzz`` (``REGRESSIONS`` at the end).

``python tests/fuzz/make_corpus.py OUT`` writes it and prints the count.
"""

from __future__ import annotations

import copy
import random
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


@dataclass(frozen=True)
class FuzzCase:
    """One input: a file or a folder, and the family of mutation that made it."""

    name: str
    path: Path
    family: str


def source(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} (is pydicom-data installed?)")
    return Path(path)


def read(name: str) -> Dataset:
    return pydicom.dcmread(source(name))


class _Corpus:
    def __init__(self, out: Path, seed: int) -> None:
        self.out = out
        self.rng = random.Random(seed)
        self.cases: list[FuzzCase] = []

    def file(self, family: str, name: str, data: bytes, suffix: str = ".dcm") -> Path:
        path = self.out / family / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.cases.append(FuzzCase(f"{family}/{name}", path, family))
        return path

    def dataset(self, family: str, name: str, ds: Dataset) -> Path:
        path = self.out / family / f"{name}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=False)
        self.cases.append(FuzzCase(f"{family}/{name}", path, family))
        return path

    def folder(self, family: str, name: str, datasets: list[Dataset | bytes]) -> Path:
        folder = self.out / family / name
        folder.mkdir(parents=True, exist_ok=True)
        for index, item in enumerate(datasets):
            target = folder / f"{index:03d}.dcm"
            if isinstance(item, bytes):
                target.write_bytes(item)
            else:
                item.save_as(target, enforce_file_format=False)
        self.cases.append(FuzzCase(f"{family}/{name}", folder, family))
        return folder


# --------------------------------------------------------------------------- header edits


def _as_text(ds: Dataset, keyword: str, text: str) -> None:
    """Store a value pydicom would refuse for the element's VR (written as LO)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag in ds:
        del ds[tag]
    ds.add_new(tag, "LO", text)


_GEOMETRY_EDITS: dict[str, Callable[[Dataset], None]] = {
    "ipp_2_values": lambda ds: setattr(ds, "ImagePositionPatient", [1.0, 2.0]),
    "ipp_nan": lambda ds: setattr(ds, "ImagePositionPatient", ["NaN", "0", "0"]),
    "ipp_inf": lambda ds: setattr(ds, "ImagePositionPatient", ["0", "inf", "0"]),
    "ipp_text": lambda ds: _as_text(ds, "ImagePositionPatient", "a\\b\\c"),
    "spacing_1_value": lambda ds: setattr(ds, "PixelSpacing", [0.5]),
    "spacing_nan": lambda ds: setattr(ds, "PixelSpacing", ["NaN", "NaN"]),
    "spacing_zero": lambda ds: setattr(ds, "PixelSpacing", [0, 0.5]),
    "spacing_negative": lambda ds: setattr(ds, "PixelSpacing", [-1, -1]),
    "orientation_zero": lambda ds: setattr(ds, "ImageOrientationPatient", [0] * 6),
    "orientation_nan": lambda ds: setattr(ds, "ImageOrientationPatient", ["NaN", 0, 0, 0, 1, 0]),
    "orientation_parallel": lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
    "orientation_5_values": lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]),
    "orientation_scaled": lambda ds: setattr(ds, "ImageOrientationPatient", [3, 0, 0, 0, 3, 0]),
    "slope_nan": lambda ds: setattr(ds, "RescaleSlope", "NaN"),
    "slope_zero": lambda ds: setattr(ds, "RescaleSlope", 0),
    "slope_inf": lambda ds: setattr(ds, "RescaleSlope", "inf"),
    "intercept_nan": lambda ds: setattr(ds, "RescaleIntercept", "NaN"),
    "slope_huge": lambda ds: setattr(ds, "RescaleSlope", "1e308"),
    "slice_thickness_nan": lambda ds: setattr(ds, "SliceThickness", "NaN"),
}

_PIXEL_EDITS: dict[str, Callable[[Dataset], None]] = {
    "rows_zero": lambda ds: setattr(ds, "Rows", 0),
    "columns_zero": lambda ds: setattr(ds, "Columns", 0),
    "rows_huge": lambda ds: setattr(ds, "Rows", 65535),
    "rows_columns_huge": lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)),
    "bits_stored_65535": lambda ds: setattr(ds, "BitsStored", 65535),
    "bits_stored_zero": lambda ds: setattr(ds, "BitsStored", 0),
    "bits_allocated_12": lambda ds: setattr(ds, "BitsAllocated", 12),
    "bits_allocated_zero": lambda ds: setattr(ds, "BitsAllocated", 0),
    "bits_allocated_64": lambda ds: setattr(ds, "BitsAllocated", 64),
    "samples_zero": lambda ds: setattr(ds, "SamplesPerPixel", 0),
    "samples_3_grey": lambda ds: setattr(ds, "SamplesPerPixel", 3),
    "pixel_representation_7": lambda ds: setattr(ds, "PixelRepresentation", 7),
    "photometric_bogus": lambda ds: setattr(ds, "PhotometricInterpretation", "BOGUS"),
    "photometric_palette_no_lut": lambda ds: setattr(
        ds, "PhotometricInterpretation", "PALETTE COLOR"
    ),
    "frames_zero": lambda ds: setattr(ds, "NumberOfFrames", 0),
    "frames_negative": lambda ds: setattr(ds, "NumberOfFrames", -3),
    "frames_huge": lambda ds: setattr(ds, "NumberOfFrames", 2_000_000),
    "frames_text": lambda ds: _as_text(ds, "NumberOfFrames", "1A"),
    "rows_text": lambda ds: _as_text(ds, "Rows", "12"),
    "pixel_data_empty": lambda ds: setattr(ds, "PixelData", b""),
    "pixel_data_half": lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 2]),
    "no_pixel_data": lambda ds: delattr(ds, "PixelData"),
}


_SYNTAX_EDITS = {
    "ts_not_a_syntax": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage, a SOP class
    "ts_garbage": "1.2.3.4.5",
    "ts_text": "not-a-uid",
    "ts_empty": "",
    "ts_big_endian_lie": "1.2.840.10008.1.2.2",
    "ts_rle_lie": "1.2.840.10008.1.2.5",
    "ts_jpeg_lie": "1.2.840.10008.1.2.4.50",
    "ts_deflate_lie": "1.2.840.10008.1.2.1.99",
    "ts_implicit_lie": "1.2.840.10008.1.2",
}


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The file with its (0002,0010) value replaced (group length left as it was)."""
    offset = data.find(b"\x02\x00\x10\x00UI", 132)
    length = struct.unpack_from("<H", data, offset + 6)[0]
    value = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
    return data[: offset + 6] + struct.pack("<H", len(value)) + value + data[offset + 8 + length :]


def header_edits(corpus: _Corpus) -> None:
    for base in ("CT_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm"):
        data = source(base).read_bytes()
        for name, uid in _SYNTAX_EDITS.items():
            corpus.file("syntax", f"{base.split('.')[0]}_{name}", with_transfer_syntax(data, uid))
    for base in ("CT_small.dcm", "MR_small.dcm"):
        stem = base.split(".")[0]
        for name, edit in {**_GEOMETRY_EDITS, **_PIXEL_EDITS}.items():
            ds = read(base)
            edit(ds)
            corpus.dataset("header", f"{stem}_{name}", ds)
    for base in ("emri_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_32bit.dcm"):
        stem = base.split(".")[0]
        for name in ("rows_columns_huge", "frames_huge", "bits_stored_65535", "rows_zero"):
            ds = read(base)
            _PIXEL_EDITS[name](ds)
            corpus.dataset("header", f"{stem}_{name}", ds)
    # Enhanced multi-frame geometry lives in functional groups.
    ds = read("emri_small.dcm")
    corpus.dataset("header", "emri_small_plain", ds)
    ds = read("emri_small.dcm")
    ds.SpacingBetweenSlices = "NaN"
    corpus.dataset("header", "emri_small_spacing_between_slices_nan", ds)
    # Palette colour with a broken lookup table.
    for name, edit in {
        "palette_descriptor_zero": lambda d: setattr(
            d, "RedPaletteColorLookupTableDescriptor", [0, 0, 0]
        ),
        "palette_descriptor_bits_3": lambda d: setattr(
            d, "RedPaletteColorLookupTableDescriptor", [256, 0, 3]
        ),
        "palette_data_short": lambda d: setattr(
            d, "RedPaletteColorLookupTableData", d.RedPaletteColorLookupTableData[:10]
        ),
        "palette_no_green": lambda d: delattr(d, "GreenPaletteColorLookupTableData"),
    }.items():
        ds = read("OBXXXX1A.dcm")
        edit(ds)
        corpus.dataset("palette", name, ds)


# --------------------------------------------------------------------------- byte edits


_BYTE_SOURCES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_bigendian.dcm",
    "liver.dcm",
)


def truncations(corpus: _Corpus) -> None:
    for base in _BYTE_SOURCES:
        data = source(base).read_bytes()
        stem = base.split(".")[0]
        offsets = {0, 1, 64, 128, 131, 132, 140, 200, 332, 500, 1000, 2000}
        offsets |= {len(data) // 2, len(data) - 100, len(data) - 2, len(data) - 1}
        for offset in sorted(o for o in offsets if o < len(data)):
            corpus.file("truncated", f"{stem}_at_{offset}", data[:offset])


def bit_flips(corpus: _Corpus, per_file: int = 8) -> None:
    for base in _BYTE_SOURCES:
        data = source(base).read_bytes()
        stem = base.split(".")[0]
        end = min(len(data), 1500)
        for index in range(per_file):
            mutated = bytearray(data)
            for _ in range(corpus.rng.randint(1, 4)):
                position = corpus.rng.randrange(128, end)
                mutated[position] ^= 1 << corpus.rng.randrange(8)
            corpus.file("bitflip", f"{stem}_{index}", bytes(mutated))


def _element_offset(data: bytes, group: int, element: int, order: str = "<") -> int | None:
    """Offset of an explicit VR element's tag (``order`` "<" or ">"), or None."""
    found = data.find(struct.pack(order + "HH", group, element), 132)
    return found if found >= 0 else None


def lying_lengths(corpus: _Corpus) -> None:
    data = source("CT_small.dcm").read_bytes()
    for tag, name in (
        ((0x0028, 0x0010), "rows"),
        ((0x0020, 0x0032), "ipp"),
        ((0x0008, 0x0018), "sop"),
    ):
        offset = _element_offset(data, *tag)
        assert offset is not None
        for length in (0, 1, 0x7FFF, 0xFFFF):
            mutated = bytearray(data)
            mutated[offset + 6 : offset + 8] = struct.pack("<H", length)
            corpus.file("length", f"CT_small_{name}_len_{length}", bytes(mutated))
    offset = _element_offset(data, 0x7FE0, 0x0010)
    assert offset is not None
    for length in (0, 2, 0x7FFFFFFE, 0xFFFFFFF0, 0xFFFFFFFF):
        mutated = bytearray(data)
        mutated[offset + 8 : offset + 12] = struct.pack("<L", length)
        corpus.file("length", f"CT_small_pixel_len_{length}", bytes(mutated))
    # A sequence of undefined length that never ends.
    mutated = bytearray(data)
    offset = _element_offset(data, 0x0008, 0x0018)
    assert offset is not None
    mutated[offset + 4 : offset + 12] = b"SQ\x00\x00\xff\xff\xff\xff"
    corpus.file("length", "CT_small_unterminated_sequence", bytes(mutated))


def wrong_vrs(corpus: _Corpus) -> None:
    targets = {"rows": (0x0028, 0x0010), "spacing": (0x0028, 0x0030), "ipp": (0x0020, 0x0032)}
    # Little endian goes through medplug's own header parser, big endian through pydicom's.
    for base, order in (("CT_small.dcm", "<"), ("MR_small_bigendian.dcm", ">")):
        data = source(base).read_bytes()
        for name, tag in targets.items():
            offset = _element_offset(data, *tag, order=order)
            assert offset is not None, (base, name)
            for vr in (b"ZZ", b"\x00\x00", b"SQ", b"OB", b"UN", b"FD"):
                mutated = bytearray(data)
                mutated[offset + 4 : offset + 6] = vr
                label = vr.decode("latin-1") if vr.isalpha() else vr.hex()
                corpus.file("vr", f"{base.split('.')[0]}_{name}_vr_{label}", bytes(mutated))


# --------------------------------------------------------------------------- compressed streams


def _with_fragments(ds: Dataset, fragments: list[bytes]) -> Dataset:
    """Encapsulated Pixel Data with an empty offset table and one item per fragment."""
    items = [b"\xfe\xff\x00\xe0\x00\x00\x00\x00"]
    for fragment in fragments:
        fragment += b"\x00" * (len(fragment) % 2)
        items.append(b"\xfe\xff\x00\xe0" + struct.pack("<L", len(fragment)) + fragment)
    ds = copy.deepcopy(ds)
    ds.PixelData = b"".join(items)
    ds["PixelData"].is_undefined_length = True
    return ds


def _fragments(ds: Dataset) -> list[bytes]:
    from pydicom.encaps import generate_frames

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=frames))


def stream_corruption(corpus: _Corpus) -> None:
    for base in (
        "MR_small_RLE.dcm",
        "SC_rgb_rle.dcm",
        "emri_small_RLE.dcm",
        "JPEG2000.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPEG-LL.dcm",
    ):
        ds = read(base)
        stem = base.split(".")[0]
        frames = _fragments(ds)
        first = frames[0]
        variants: dict[str, bytes] = {
            "empty": b"",
            "half": first[: len(first) // 2],
            "header_only": first[:64],
            "zeros": bytes(len(first)),
        }
        for index in range(4):
            mutated = bytearray(first)
            for _ in range(8):
                position = corpus.rng.randrange(0, min(len(first), 256))
                mutated[position] = corpus.rng.randrange(256)
            variants[f"scrambled_{index}"] = bytes(mutated)
        if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5":
            # RLE header: segment count and 15 offsets; lie about both.
            for count in (0, 15, 255):
                variants[f"rle_segments_{count}"] = struct.pack("<L", count) + first[4:]
            variants["rle_offsets_past_end"] = first[:4] + struct.pack("<L", 1 << 30) + first[8:]
            variants["rle_offsets_backwards"] = (
                first[:4] + struct.pack("<LL", 64, 10**6) + first[12:]
            )
            variants["rle_runs_overflow"] = first[:64] + b"\x81\xff" * 2048
        for name, payload in variants.items():
            corpus.dataset("stream", f"{stem}_{name}", _with_fragments(ds, [payload, *frames[1:]]))
        # Fewer fragments than frames.
        if len(frames) > 1:
            corpus.dataset("stream", f"{stem}_missing_frames", _with_fragments(ds, frames[:1]))


# --------------------------------------------------------------------------- folders


def _stack(count: int = 3, step: float = 5.0) -> list[Dataset]:
    base = read("CT_small.dcm")
    series = generate_uid()
    slices = []
    for index in range(count):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + index * step]
        ds.InstanceNumber = index + 1
        slices.append(ds)
    return slices


def folders(corpus: _Corpus) -> None:
    corpus.folder("folder", "good_stack", list(_stack()))
    stack = _stack(5)
    stack[2].ImagePositionPatient = ["NaN", "0", "0"]
    corpus.folder("folder", "one_nan_slice", list(stack))
    stack = _stack(5)
    stack[4].PixelSpacing = [0, 0]
    corpus.folder("folder", "one_zero_spacing_slice", list(stack))
    stack = _stack(3)
    for ds in stack:
        ds.Rows = ds.Columns = 65535
    corpus.folder("folder", "huge_stack_65535", list(stack))
    stack = _stack(4)
    stack[1].RescaleSlope = "NaN"
    corpus.folder("folder", "one_nan_slope", list(stack))
    stack = _stack(4)
    stack[3].PixelData = stack[3].PixelData[:100]
    corpus.folder("folder", "one_short_pixel_data", list(stack))
    # Duplicates: byte-identical copies, and one instance in three transfer syntaxes.
    data = source("emri_small.dcm").read_bytes()
    corpus.folder("duplicate", "emri_two_identical", [data, data])
    corpus.folder(
        "duplicate",
        "emri_three_syntaxes",
        [
            source(name).read_bytes()
            for name in (
                "emri_small.dcm",
                "emri_small_RLE.dcm",
                "emri_small_jpeg_2k_lossless.dcm",
            )
        ],
    )
    stack = _stack(3)
    copy_of_first = copy.deepcopy(stack[0])
    corpus.folder("duplicate", "stack_with_copy", [*stack, copy_of_first])
    stack = _stack(3)
    conflicting = copy.deepcopy(stack[0])
    conflicting.ImagePositionPatient = [0, 0, 999]
    corpus.folder("duplicate", "stack_with_conflicting_copy", [*stack, conflicting])
    # A folder whose best series fails: the next-ranked one should load.
    stack = _stack(6)
    for ds in stack:
        ds.ImagePositionPatient = [0, 0, 0]
    corpus.folder("fallback", "broken_volume_and_radiograph", [*stack, read("MR_small.dcm")])
    # A truncated slice among good ones.
    stack = _stack(5)
    cut = stack[4]
    path = corpus.folder("fallback", "stack_with_cut_file", list(stack))
    (path / "004.dcm").write_bytes((path / "004.dcm").read_bytes()[:5000])
    del cut
    # Report text and NIfTI-looking files next to DICOM (batch probes these).
    folder = corpus.folder("folder", "with_report_and_nifti", [read("MR_small.dcm")])
    (folder / "report.txt").write_text("Findings: none.\n")
    (folder / "image.nii.gz").write_bytes(b"\x1f\x8b" + bytes(200))


# --------------------------------------------------------------------------- not DICOM


def not_dicom(corpus: _Corpus) -> None:
    corpus.file("junk", "empty", b"")
    corpus.file("junk", "text", b"hello, this is not an image\n" * 20)
    corpus.file("junk", "random", bytes(corpus.rng.randrange(256) for _ in range(4096)))
    corpus.file("junk", "dicm_then_garbage", bytes(128) + b"DICM" + b"\xff" * 600)
    corpus.file("junk", "dicm_only", bytes(128) + b"DICM")
    corpus.file("junk", "report", b"Findings: none.\n", suffix=".txt")
    corpus.file("junk", "fake_nifti", b"\x1f\x8b" + bytes(300), suffix=".nii.gz")
    corpus.file("junk", "fake_nifti_plain", bytes(348), suffix=".nii")
    header = bytearray(348)
    header[0:4] = struct.pack("<i", 348)
    header[40:56] = struct.pack("<8h", 3, 32767, 32767, 32767, 1, 1, 1, 1)
    header[70:72] = struct.pack("<h", 16)  # float32
    header[344:348] = b"n+1\x00"
    corpus.file("junk", "nifti_huge_dims", bytes(header) + bytes(100), suffix=".nii")
    empty = corpus.out / "junk" / "empty_folder"
    empty.mkdir(parents=True, exist_ok=True)
    corpus.cases.append(FuzzCase("junk/empty_folder", empty, "junk"))


# --------------------------------------------------------------------------- regressions

# Inputs ``make fuzz`` (tests/fuzz/fuzz_ingest.py) found escaping as foreign
# exceptions, rebuilt here as (source file, [(offset, new bytes), ...]).
REGRESSIONS: dict[str, tuple[str, list[tuple[int, bytes]]]] = {
    # Encapsulated Pixel Data's undefined length 0xFFFFFFFF flipped to 0xFFFFFFFE: pydicom
    # deferred the value, then read 4 GiB on access (MemoryError under the fuzz memory cap).
    "jpeg_ls_pixel_length_4GiB": ("MR_small_jpeg_ls_lossless.dcm", [(1528, b"\xfe")]),
    # The same lie on files whose header pydicom reads (big endian; a flipped meta byte):
    # the deferred Pixel Data was read in full while medplug only asked for its length.
    "big_endian_pixel_length_4GiB": ("MR_small_bigendian.dcm", [(1512, b"\xff\x7f\x00\x00")]),
    "j2k_meta_flip_pixel_length": ("JPEG2000.dcm", [(256, b"\x33"), (1876, b"\x10")]),
}


def regressions(corpus: _Corpus) -> None:
    for name, (base, patches) in REGRESSIONS.items():
        data = bytearray(source(base).read_bytes())
        for offset, replacement in patches:
            data[offset : offset + len(replacement)] = replacement
        corpus.file("regression", name, bytes(data))


def build_corpus(out: str | Path, seed: int = 0) -> list[FuzzCase]:
    """Write the corpus under ``out`` (emptied first); every input, in a stable order."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    corpus = _Corpus(out, seed)
    with lenient_pydicom():
        header_edits(corpus)
        truncations(corpus)
        bit_flips(corpus)
        lying_lengths(corpus)
        wrong_vrs(corpus)
        stream_corruption(corpus)
        folders(corpus)
        not_dicom(corpus)
        regressions(corpus)
    return corpus.cases


@contextmanager
def lenient_pydicom() -> Iterator[None]:
    """Let pydicom write the invalid values the corpus is made of, without warnings."""
    settings = config.settings
    reading, writing = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = reading, writing


if __name__ == "__main__":
    cases = build_corpus(sys.argv[1] if len(sys.argv) > 1 else "fuzz_corpus")
    print(f"{len(cases)} inputs")
