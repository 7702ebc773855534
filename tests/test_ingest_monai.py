"""MedplugDicomReader inside MONAI: same affine as the NIfTI, same voxels as load_image."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series, write_secondary_capture
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from medplug.ingest import MedplugDicomReader, load_image, save_nifti
from medplug.ingest.monai_reader import c_contiguous

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def oblique_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("oblique")
    volume = np.random.default_rng(3).integers(-200, 400, size=(20, 16, 8)).astype(np.float32)
    angle = np.radians(20)
    write_ct_series(
        folder,
        volume,
        row_cosine=(np.cos(angle), np.sin(angle), 0.0),
        col_cosine=(0.0, 0.0, -1.0),  # coronal-ish oblique
        spacing=(0.9, 1.1, 2.0),
        instance_numbers=list(range(8, 0, -1)),
    )
    return folder, volume


def test_affine_matches_nifti_directly_and_through_loadimage(
    oblique_series, tmp_path: Path
) -> None:
    from monai.transforms import LoadImage

    folder, volume = oblique_series
    dicom_volume = load_image(folder)
    nifti_path = save_nifti(dicom_volume, tmp_path / "same.nii.gz")
    nifti_volume = load_image(nifti_path)
    np.testing.assert_allclose(nifti_volume.affine, dicom_volume.affine, atol=1e-5)
    np.testing.assert_array_equal(nifti_volume.array, dicom_volume.array)

    from_dicom = LoadImage(reader=MedplugDicomReader(), image_only=True)(str(folder))
    from_nifti = LoadImage(reader="NibabelReader", image_only=True)(str(nifti_path))
    np.testing.assert_allclose(from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(from_dicom.numpy(), from_nifti.numpy())
    np.testing.assert_array_equal(from_dicom.numpy(), volume)
    assert tuple(from_dicom.meta["spatial_shape"]) == volume.shape


def test_transform_chain_gives_same_tensor_for_dicom_and_nifti(
    oblique_series, tmp_path: Path
) -> None:
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        Resized,
        ScaleIntensityRanged,
        Spacingd,
    )

    folder, _ = oblique_series
    nifti_path = save_nifti(load_image(folder), tmp_path / "same.nii.gz")

    def chain(reader):
        return Compose(
            [
                LoadImaged("image", reader=reader, image_only=True),
                EnsureChannelFirstd("image"),
                Orientationd("image", axcodes="RAS"),
                Spacingd("image", pixdim=(1.5, 1.5, 1.5)),
                ScaleIntensityRanged("image", a_min=-200, a_max=400, b_min=0, b_max=1, clip=True),
                Resized("image", spatial_size=(16, 16, 16)),
            ]
        )

    a = chain(MedplugDicomReader())({"image": str(folder)})["image"]
    b = chain("NibabelReader")({"image": str(nifti_path)})["image"]
    assert a.shape == (1, 16, 16, 16)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # RAS orientation: the spatial block of the affine has positive diagonal-dominant axes.
    spatial = a.affine.numpy()[:3, :3]
    assert np.all(np.diag(spatial) > 0)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_reader_suffix_and_2d_colour_channel() -> None:
    from monai.transforms import EnsureChannelFirst, LoadImage
    from pydicom.data import get_testdata_file

    reader = MedplugDicomReader()
    assert reader.verify_suffix("folder/IM0001") and reader.verify_suffix("x.nii.gz")
    assert not reader.verify_suffix("photo.png")
    rgb = LoadImage(reader=reader, image_only=True)(get_testdata_file("SC_rgb.dcm"))
    assert tuple(rgb.shape) == (100, 100, 3)
    assert tuple(EnsureChannelFirst()(rgb).shape) == (3, 100, 100)


def _write_case(kind: str, folder: Path) -> Path:
    """A series of one kind; volumes are not square so a swapped x/y cannot pass."""
    rng = np.random.default_rng(11)
    if kind == "multi-frame":
        return Path(get_testdata_file("eCT_Supplemental.dcm"))
    if kind == "2d-monochrome1":
        image = rng.integers(0, 4096, size=(30, 20)).astype(np.uint16)
        return write_secondary_capture(folder / "m1.dcm", image, monochrome1=True)
    shape = {"plain": (40, 24, 20), "rescaled": (36, 28, 18), "compressed": (32, 20, 6)}[kind]
    volume = rng.integers(-1000, 2000, size=shape).astype(np.float32)
    options: dict = {"instance_numbers": list(range(shape[2], 0, -1))}
    if kind == "rescaled":
        volume = np.round(volume / 2.5) * 2.5 - 0.25  # stored = (HU + 1000.25) / 2.5, exact
        options.update(slope=2.5, intercept=-1000.25)
    if kind == "compressed":
        options.update(transfer_syntax=RLELossless)
    write_ct_series(folder, volume, **options)
    return folder


@pytest.mark.parametrize(
    "kind", ["plain", "rescaled", "compressed", "multi-frame", "2d-monochrome1"]
)
def test_loadimage_and_load_image_give_identical_volumes(kind: str, tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    path = _write_case(kind, tmp_path)
    direct = load_image(path)
    xy = load_image(path, c_order=True)
    loaded = LoadImage(reader=MedplugDicomReader(), image_only=True)(str(path))

    # c_order changes the memory layout of stacks only, never values or metadata. The
    # plain (20 slices) and rescaled (18) series span two slice groups of _stack_c_order.
    assert xy.array.dtype == direct.array.dtype == np.float32
    np.testing.assert_array_equal(xy.array, direct.array)
    np.testing.assert_array_equal(xy.affine, direct.affine)
    assert xy.meta == direct.meta
    if kind in ("plain", "rescaled", "compressed"):
        assert direct.array.transpose(2, 1, 0).flags.c_contiguous  # load_image: (z, y, x) buffer
        assert xy.array.flags.c_contiguous  # c_order: written in (x, y, z) C order

    # LoadImage: the same voxels in C order, the same affine and spatial shape.
    array = loaded.numpy()
    assert array.flags.c_contiguous and array.dtype == np.float32
    np.testing.assert_array_equal(array, direct.array)
    np.testing.assert_array_equal(loaded.affine.numpy(), direct.affine)
    np.testing.assert_array_equal(loaded.meta["original_affine"], direct.affine)
    assert tuple(loaded.meta["spatial_shape"]) == direct.array.shape[:3]
    assert loaded.meta["series_uid"] == (direct.series_uid or "")
    for view in (direct.array, xy.array):  # both layouts copy to the same C array
        np.testing.assert_array_equal(c_contiguous(view), direct.array)
