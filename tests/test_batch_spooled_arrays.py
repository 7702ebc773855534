"""Decoded volumes travel from worker to inference process as files: same values, no leftovers."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from medplug.batch.spooled_arrays import discard_spooled, restore_images, spool_images
from medplug.contract import Case, ImageVolume


def ct_like_case(seed: int) -> Case:
    """A 2 MiB volume in the (x, y, z) Fortran layout the DICOM loader returns."""
    array = np.random.default_rng(seed).normal(size=(128, 128, 32)).astype(np.float32)
    small = np.ones((8, 8), dtype=np.float32)
    return Case(f"case{seed}", images=[ImageVolume(array=np.asfortranarray(array)),
                                      ImageVolume(array=small)])  # fmt: skip


def spool_in_worker(seed: int, folder: str) -> tuple[Case, list[str | None]]:
    case = ct_like_case(seed)
    return case, spool_images(case, folder, case.case_id)


def test_a_volume_spooled_in_another_process_comes_back_identical(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as pool:
        case, paths = pool.submit(spool_in_worker, 3, str(tmp_path)).result()
    big, small = case.images
    assert big.array.size == 0 and paths[0] is not None  # the volume did not go through the pipe
    assert paths[1] is None and small.array.shape == (8, 8)  # small images stay inline
    restore_images(case, paths)
    expected = ct_like_case(3).images[0].array
    np.testing.assert_array_equal(case.images[0].array, expected)
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped
    case.images[0].array[0, 0, 0] = 7.0  # copy-on-write: the plugins may write to it
    assert case.images[0].array[0, 0, 0] == 7.0


def test_discarding_removes_files_of_a_study_that_will_not_be_restored(tmp_path: Path) -> None:
    case = ct_like_case(1)
    paths = spool_images(case, tmp_path, case.case_id)
    assert len(list(tmp_path.iterdir())) == 1
    discard_spooled(paths)
    discard_spooled(paths)  # already gone: no error
    assert list(tmp_path.iterdir()) == []
