"""Series -> volume: order, HU, geometry errors, compression, multi-frame, 2D."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series, write_secondary_capture
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from medplug.errors import DicomError, SeriesGeometryError
from medplug.ingest import load_image, scan_folder
from medplug.ingest.errors import UnsupportedTransferSyntaxError

RNG = np.random.default_rng(7)


def _volume(shape=(24, 20, 12)) -> np.ndarray:
    return RNG.integers(-1000, 2000, size=shape).astype(np.float32)


def test_order_by_position_not_instance_number_or_file_name(tmp_path: Path) -> None:
    volume = _volume()
    n = volume.shape[2]
    # Instance numbers run backwards and file names are shuffled.
    names = [f"{value:05d}.dcm" for value in RNG.permutation(n) * 31]
    write_ct_series(tmp_path, volume, instance_numbers=list(range(n, 0, -1)), file_names=names)
    loaded = load_image(tmp_path)
    np.testing.assert_array_equal(loaded.array, volume)
    expected = np.diag([-0.8, -0.7, 2.5, 1.0])
    expected[:3, 3] = [100.0, 120.0, 50.0]  # LPS (-100, -120, 50) in RAS
    np.testing.assert_allclose(loaded.affine, expected, atol=1e-6)
    assert loaded.spacing == pytest.approx((0.8, 0.7, 2.5))


def test_monai_pydicom_reader_orders_by_instance_number(tmp_path: Path) -> None:
    """Documented comparison: MONAI's PydicomReader trusts InstanceNumber; medplug does not."""
    from monai.transforms import LoadImage

    volume = _volume((16, 16, 10))
    write_ct_series(tmp_path, volume, instance_numbers=list(range(10, 0, -1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_array = np.asarray(LoadImage(reader="PydicomReader", image_only=True)(str(tmp_path)))
    ours = load_image(tmp_path).array
    np.testing.assert_array_equal(ours, volume)
    # MONAI returns the slices reversed relative to their positions.
    assert not np.array_equal(monai_array, volume)
    np.testing.assert_array_equal(monai_array, volume[:, :, ::-1])


def test_matches_simpleitk_values_and_geometry(tmp_path: Path) -> None:
    import SimpleITK as sitk

    volume = _volume((20, 18, 9))
    write_ct_series(
        tmp_path,
        volume,
        row_cosine=(0.0, 1.0, 0.0),
        col_cosine=(0.0, 0.0, -1.0),  # sagittal
        spacing=(0.5, 0.6, 3.0),
        slope=0.5,
        intercept=-1000,
    )
    ours = load_image(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    np.testing.assert_allclose(ours.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps = np.eye(4)
    lps[:3, :3] = direction
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(ours.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-5)
    assert ours.meta["rescale_slope"] == 0.5


@pytest.mark.parametrize(
    ("change", "category"),
    [
        ("drop", "missing_slices"),
        ("uneven", "uneven_spacing"),
        ("tilt", "gantry_tilt"),
        ("duplicate", "duplicate_positions"),
    ],
)
def test_geometry_problems_are_named(tmp_path: Path, change: str, category: str) -> None:
    n = 10
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in range(n)]
    if change == "uneven":
        positions[4] = positions[4] + [0, 0, 0.7]
    if change == "tilt":
        positions = [p + [0.0, 0.35 * k, 0.0] for k, p in enumerate(positions)]
    if change == "duplicate":
        positions[5] = positions[4]
    write_ct_series(tmp_path, _volume((8, 8, n)), positions=positions)
    if change == "drop":
        sorted(tmp_path.iterdir())[4].unlink()
        (tmp_path / "slice_0005.dcm").unlink()
    with pytest.raises(SeriesGeometryError) as info:
        load_image(tmp_path)
    assert info.value.category == category
    assert str(tmp_path) in str(info.value)
    if change == "drop":
        assert "2 slice(s) missing" in info.value.detail


def test_gantry_tilt_can_be_kept_as_sheared_affine(tmp_path: Path) -> None:
    positions = [np.array([0.0, 0.35 * k, 2.0 * k]) for k in range(6)]
    write_ct_series(tmp_path, _volume((8, 8, 6)), positions=positions)
    volume = load_image(tmp_path, allow_tilt=True)
    np.testing.assert_allclose(volume.affine[:3, 2], [0.0, -0.35, 2.0], atol=1e-6)
    assert volume.meta["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan(0.35 / 2)), 1e-3)


def test_mixed_orientation_and_size(tmp_path: Path) -> None:
    series_uid = pydicom.uid.generate_uid()
    study_uid = pydicom.uid.generate_uid()
    common = {"series_uid": series_uid, "study_uid": study_uid}
    write_ct_series(
        tmp_path / "a", _volume((8, 8, 4)), file_names=[f"a{k}" for k in range(4)], **common
    )
    write_ct_series(
        tmp_path / "a",
        _volume((8, 8, 2)),
        row_cosine=(0, 1, 0),
        col_cosine=(0, 0, -1),
        file_names=["b0", "b1"],
        **common,
    )
    with pytest.raises(SeriesGeometryError) as info:
        load_image(tmp_path / "a")
    assert info.value.category == "mixed_orientation"
    write_ct_series(
        tmp_path / "b", _volume((8, 8, 4)), file_names=[f"a{k}" for k in range(4)], **common
    )
    write_ct_series(
        tmp_path / "b",
        _volume((6, 8, 2)),
        origin=(-100, -120, 70),
        file_names=["b0", "b1"],
        **common,
    )
    with pytest.raises(SeriesGeometryError) as info:
        load_image(tmp_path / "b")
    assert info.value.category == "mixed_size"


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_round_trip(tmp_path: Path, syntax: str) -> None:
    volume = _volume((64, 48, 3))
    write_ct_series(tmp_path, volume, transfer_syntax=syntax)
    loaded = load_image(tmp_path)
    np.testing.assert_array_equal(loaded.array, volume)
    assert scan_folder(tmp_path).series[0].transfer_syntaxes == [syntax]


def test_missing_decoder_names_the_transfer_syntax(tmp_path: Path) -> None:
    source = get_testdata_file("MR_small_jp2klossless.dcm")
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 multi-component
    target = tmp_path / "part2.dcm"
    ds.save_as(target)
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        load_image(target)
    assert info.value.category == "unsupported_transfer_syntax"
    assert "JPEG 2000 Part 2" in info.value.detail


def test_monochrome1_is_inverted_and_2d_images_stay_2d(tmp_path: Path) -> None:
    image = RNG.integers(0, 4096, size=(30, 20)).astype(np.uint16)
    plain = load_image(write_secondary_capture(tmp_path / "m2.dcm", image))
    inverted = load_image(write_secondary_capture(tmp_path / "m1.dcm", image, monochrome1=True))
    assert plain.array.shape == (30, 20) and plain.ndim == 2
    np.testing.assert_array_equal(plain.array, image)
    np.testing.assert_array_equal(inverted.array, 4095 - image.astype(np.float32))
    assert "spacing assumed 1 mm" in plain.meta["warnings"][0]


def test_enhanced_ct_uses_per_frame_positions() -> None:
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    volume = load_image(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    positions = np.array([f.PlanePositionSequence[0].ImagePositionPatient for f in frames], float)
    normal = np.cross(
        *np.asarray(
            ds.SharedFunctionalGroupsSequence[0]
            .PlaneOrientationSequence[0]
            .ImageOrientationPatient,
            float,
        ).reshape(2, 3)
    )
    order = np.argsort(positions @ normal)
    first = positions[order[0]]
    np.testing.assert_allclose(volume.affine[:3, 3], [-first[0], -first[1], first[2]])
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    slope, intercept = float(transform.RescaleSlope), float(transform.RescaleIntercept)
    assert intercept == -1024.0
    expected = ds.pixel_array[order].astype(np.float32) * slope + intercept
    np.testing.assert_allclose(volume.array, expected.transpose(2, 1, 0))


def test_volume_memory_is_one_float32_array(tmp_path: Path) -> None:
    volume = _volume((16, 16, 20))
    write_ct_series(tmp_path, volume)
    loaded = load_image(tmp_path)
    assert loaded.array.dtype == np.float32
    assert loaded.array.base is not None and loaded.array.base.nbytes == volume.nbytes


def test_errors_never_leak_patient_name(tmp_path: Path) -> None:
    write_ct_series(tmp_path, _volume((8, 8, 3)), positions=[(0, 0, 0), (0, 0, 0), (0, 0, 2)])
    with pytest.raises(DicomError) as info:
        load_image(tmp_path)
    assert "SYNTHETIC" not in str(info.value) and "SYN0001" not in str(info.value)
