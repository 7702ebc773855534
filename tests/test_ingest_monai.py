"""MedplugDicomReader inside MONAI: same affine as the NIfTI of the same volume."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

from medplug.ingest import MedplugDicomReader, load_image, save_nifti

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
