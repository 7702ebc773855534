"""Quick side-by-side timing used while tuning ingest (formal one: benchmarks/ingest.py).

Usage: python benchmarks/ingest_quick.py SERIES_DIR [FOLDER_DIR]
Prints medians over 3 runs for medplug, SimpleITK ImageSeriesReader, MONAI
LoadImage(PydicomReader), plus medplug's peak extra memory (tracemalloc, numpy
allocations included) relative to the output array, and scan throughput.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
import warnings

warnings.simplefilter("ignore")


def median_time(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    import SimpleITK as sitk
    from monai.transforms import LoadImage

    from medplug.ingest import load_image, scan_folder

    series = sys.argv[1]
    load_image(series)  # warm page cache
    ours = median_time(lambda: load_image(series))

    def simpleitk() -> None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(series))
        reader.Execute()

    itk = median_time(simpleitk)
    monai_reader = LoadImage(reader="PydicomReader", image_only=True)
    monai = median_time(lambda: monai_reader(series), runs=2)
    tracemalloc.start()
    volume = load_image(series)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"series {volume.array.shape}: medplug {ours:.3f} s, SimpleITK {itk:.3f} s "
        f"(ratio {ours / itk:.2f}), MONAI PydicomReader {monai:.3f} s (x{monai / ours:.1f})"
    )
    ratio = peak / volume.array.nbytes
    print(f"medplug peak traced memory {peak / 1e6:.0f} MB = {ratio:.2f}x output")
    if len(sys.argv) > 2:
        for workers in (1, 2):
            seconds = median_time(lambda w=workers: scan_folder(sys.argv[2], workers=w))
            n = scan_folder(sys.argv[2]).n_files
            print(f"scan {n} files, workers={workers}: {n / seconds:.0f} files/s")


if __name__ == "__main__":
    main()
