"""Decoded volumes go from a worker to the inference process as files, not through the pipe.

A CT of 256x256x64 float32 voxels is 16 MiB. Returned through the process
pool, it is pickled, pushed through a 64 KiB pipe, reassembled and unpickled:
about 25 ms of the inference process's CPU per study, measured. Written by the
worker as ``.npy`` into the run's spool folder and memory-mapped copy-on-write
by the inference process, it costs that process about 7 ms, and the file is
unlinked as soon as it is mapped, so nothing stays behind on disk (the pages
stay valid until the array is dropped).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medplug.contract import Case

# Below this many bytes the pipe is as cheap as a file (small 2D images, say).
MIN_SPOOLED_BYTES = 1 << 20


def spool_images(case: Case, folder: str | Path, stem: str) -> list[str | None]:
    """Write each large image array of ``case`` to ``folder``, leaving an empty array behind.

    Returns one entry per image: the file it went to, or None where it stayed inline.
    """
    paths: list[str | None] = []
    for index, image in enumerate(case.images):
        array = np.asarray(image.array)
        if array.nbytes < MIN_SPOOLED_BYTES:
            paths.append(None)
            continue
        path = Path(folder) / f"{stem}-{index}.npy"
        np.save(path, array, allow_pickle=False)
        image.array = np.empty((0,), dtype=array.dtype)
        paths.append(str(path))
    return paths


def restore_images(case: Case, paths: list[str | None]) -> None:
    """Map the spooled arrays back into ``case`` (copy-on-write) and unlink their files."""
    for image, path in zip(case.images, paths, strict=True):
        if path is None:
            continue
        try:
            image.array = np.asarray(np.load(path, mmap_mode="c", allow_pickle=False))
        finally:
            os.unlink(path)


def discard_spooled(paths: list[str | None]) -> None:
    """Remove spooled files whose study will not be restored (its load failed after all)."""
    for path in paths:
        if path is not None:
            Path(path).unlink(missing_ok=True)
