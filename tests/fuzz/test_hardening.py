"""Ingest hardening, case by case: panics, exact values, duplicates, fallback, inspect."""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from make_corpus import _Corpus, folders, lenient_pydicom, source, stream_corruption  # noqa: E402

from medplug.cli.main import app  # noqa: E402
from medplug.errors import DicomError  # noqa: E402
from medplug.ingest import load_case, load_image, scan_folder  # noqa: E402
from medplug.ingest.errors import LOAD_CATEGORIES, SKIP_CATEGORIES, TruncatedDicomError  # noqa: E402
from medplug.ingest.guard import guarded  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The folder and compressed-stream families of the fuzz corpus."""
    built = _Corpus(tmp_path_factory.mktemp("hardening"), seed=0)
    with lenient_pydicom():
        folders(built)
        stream_corruption(built)
    return {case.name: case.path for case in built.cases}


class _FakePanic(BaseException):
    """Shaped like pyo3's PanicException: a BaseException, not an Exception."""


def test_guard_turns_any_base_exception_into_a_named_dicom_error(tmp_path: Path) -> None:
    with pytest.raises(DicomError) as caught:
        with guarded(tmp_path / "x.dcm", "decode_failed", "decoding pixel data"):
            raise _FakePanic("index out of bounds")
    assert caught.value.category == "decode_failed"
    assert "x.dcm" in str(caught.value) and "_FakePanic" in str(caught.value)
    with pytest.raises(KeyboardInterrupt):
        with guarded(tmp_path, "decode_failed", "decoding"):
            raise KeyboardInterrupt


def test_rust_rle_panic_becomes_decode_failed(corpus: dict[str, Path]) -> None:
    path = corpus["stream/MR_small_RLE_rle_runs_overflow"]
    with pytest.raises(DicomError) as caught:
        load_image(path)
    assert caught.value.category == "decode_failed"
    assert "PanicException" in caught.value.detail  # the real pylibjpeg-rle panic, caught


def test_errors_pickle_with_their_category() -> None:
    error = pickle.loads(pickle.dumps(TruncatedDicomError("/a/b.dcm", "cut at 500 bytes")))
    assert isinstance(error, TruncatedDicomError)
    assert (error.category, error.detail, error.path) == (
        "truncated",
        "cut at 500 bytes",
        Path("/a/b.dcm"),
    )


def test_new_categories_are_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "ingest.md").read_text()
    for category in (*LOAD_CATEGORIES, *SKIP_CATEGORIES):
        assert f"`{category}`" in docs, category


def test_32_bit_integers_keep_their_exact_value() -> None:
    volume = load_image(source("SC_rgb_32bit.dcm"))
    assert volume.array.dtype == np.float64
    assert volume.array.max() == 4294967295  # float32 would give 4294967296


def test_copies_of_one_instance_load_once_with_a_warning(corpus: dict[str, Path]) -> None:
    volume = load_image(corpus["duplicate/emri_three_syntaxes"])
    assert volume.array.shape == (64, 64, 10)
    assert any("duplicate file(s)" in w for w in volume.meta["warnings"])
    scan = scan_folder(corpus["duplicate/emri_three_syntaxes"])
    (series,) = scan.series
    assert (series.n_files, series.n_slices, len(series.duplicates)) == (3, 10, 2)
    with pytest.raises(DicomError) as caught:
        load_image(corpus["duplicate/stack_with_conflicting_copy"])
    assert caught.value.category == "duplicate_instances"


def test_a_failing_best_series_falls_back_to_the_next(corpus: dict[str, Path]) -> None:
    folder = corpus["fallback/broken_volume_and_radiograph"]
    volume = load_image(folder)
    assert volume.array.shape == (64, 64) and volume.modality == "MR"
    assert volume.meta["selection"]["failed"][0]["category"] == "duplicate_positions"
    assert any("failed to load: duplicate_positions" in w for w in volume.meta["warnings"])
    case = load_case(folder)
    assert case.image.series_uid == volume.series_uid  # predict loads what load_image loads


def test_inspect_names_the_failure_and_what_would_load(corpus: dict[str, Path]) -> None:
    folder = corpus["fallback/broken_volume_and_radiograph"]
    result = CliRunner().invoke(app, ["inspect", str(folder)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Cannot load:" in result.output and "duplicate_positions" in result.output
    assert "Would load:" in result.output and "(64, 64)" in result.output
    payload = json.loads(CliRunner().invoke(app, ["inspect", str(folder), "--json"]).stdout)
    assert payload["would_load"]["shape"] == [64, 64]
    assert payload["load_failures"][0]["category"] == "duplicate_positions"


def test_inspect_exits_1_when_nothing_would_load(tmp_path: Path, corpus: dict[str, Path]) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["inspect", str(empty)], terminal_width=200)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "no image series" in text and "transfer syntax" not in text
    fake = tmp_path / "fake.dcm"
    fake.write_text("not dicom at all")
    result = runner.invoke(app, ["inspect", str(fake)], terminal_width=200)
    assert result.exit_code == 1
    assert "fake.dcm" in result.output.split("Skipped files")[1]  # examples: the name, not "."
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source("CT_small.dcm").read_bytes()[:500])
    result = runner.invoke(app, ["inspect", str(cut)], terminal_width=200)
    assert result.exit_code == 1 and "truncated" in result.output
    result = runner.invoke(app, ["inspect", str(corpus["fallback/stack_with_cut_file"])])
    assert result.exit_code == 1 and "truncated" in result.output


def test_no_library_warning_escapes_inspect(corpus: dict[str, Path]) -> None:
    folder = corpus["folder/with_report_and_nifti"]  # report.txt and a fake .nii.gz beside DICOM
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == []


def test_warning_capture_is_thread_safe_and_restores_global_state() -> None:
    """Interleaved blocks in several threads each see only their own warnings."""
    import threading

    from medplug.ingest.guard import quiet_warnings

    before = (warnings.showwarning, list(warnings.filters))
    seen: dict[int, list[str]] = {}
    barrier = threading.Barrier(4)

    def work(index: int) -> None:
        mine: list[str] = []
        barrier.wait()
        for round_ in range(50):
            with quiet_warnings(None, mine):
                warnings.warn(f"thread {index} round {round_}", UserWarning, stacklevel=1)
        seen[index] = mine

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (warnings.showwarning, list(warnings.filters)) == before
    for index, texts in seen.items():
        assert texts == [f"thread {index} round {r}" for r in range(50)]


def test_gzip_nifti_bomb_is_refused_under_the_serve_volume_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 MiB .nii.gz that declares and holds 2 GiB of voxels: refused before nibabel
    reads it once the bound is lower (``medplug serve`` sets 1 GiB for uploads)."""
    import gzip
    import resource
    import struct

    import nibabel as nib

    small = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), small)
    header = bytearray(small.read_bytes()[:352])
    struct.pack_into("<8h", header, 40, 3, 1024, 1024, 512, 1, 1, 1, 1)
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(bytes(header))
        zeros = bytes(1 << 24)
        for _ in range(128):
            out.write(zeros)
    assert bomb.stat().st_size < 16 << 20
    monkeypatch.setenv("MEDPLUG_MAX_VOLUME_BYTES", str(1 << 30))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DicomError) as refused:
        load_image(bomb)
    assert refused.value.category == "too_large"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256


def test_deflated_data_set_is_bounded_before_pydicom_inflates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydicom inflates a deflated file whole even for a header: counted first, in chunks."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, 160
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(512 * 512 * 160 * 2)  # 80 MiB of zeros: about 80 KiB deflated
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("MEDPLUG_MAX_DEFLATED_BYTES", str(1 << 20))  # + 64 MiB for the header
    scan = scan_folder(tmp_path)
    assert [s.category for s in scan.skipped] == ["too_large"]
    assert "inflates to over" in scan.skipped[0].reason
    monkeypatch.delenv("MEDPLUG_MAX_DEFLATED_BYTES")
    assert not scan_folder(tmp_path).skipped  # within the default bound it is read as usual


@pytest.mark.timeout(120)
def test_deflated_stream_followed_by_padding_ends(tmp_path: Path, monkeypatch) -> None:
    """A byte after the deflate stream's end once kept the size check looping forever.

    CPython's decompressor can leave that byte in ``unconsumed_tail`` after ``eof``
    while returning nothing; the suite's own deflated file hit it at some UID lengths.
    Small output steps make the stream end inside a step that started with a tail.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    from medplug.ingest import deflate

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.BitsAllocated = 8
    ds.PixelData = bytes(1 << 20)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "padded.dcm"
    ds.save_as(path, enforce_file_format=True)
    monkeypatch.setattr(deflate, "_MAX_OUT", 4096)
    for _ in range(4):
        with path.open("ab") as handle:
            handle.write(b"\0")
        deflate.check_inflated_size(path)  # returns: within the bound, and it ends
