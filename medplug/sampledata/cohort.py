"""Generate the whole synthetic cohort: DICOM, NIfTI, mask, report and clinical CSV per case.

Every random draw comes from ``numpy.random.SeedSequence([seed, case, stream])``
so the same seed and options give byte-identical files, and changing one
option (say ``report_agreement``) leaves the other modalities unchanged.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

from medplug.errors import DataError
from medplug.sampledata.clinical import ClinicalTruth, draw_clinical, with_missing
from medplug.sampledata.dicom_series import StudyHeader, variant_for_case, write_ct_series
from medplug.sampledata.geometry import SeriesGeometry, draw_geometry
from medplug.sampledata.options import CohortOptions
from medplug.sampledata.phantom import draw_lesion, lesion_mask, render_volume
from medplug.sampledata.reports import ReportFinding, write_report

LABEL_NAMES = ("no_lesion", "lesion")
MANIFEST_COLUMNS = (
    "case_id label label_name dicom_dir nifti lesion_mask report_path report_text "
    "study_uid series_uid accession age sex smoking crp"
).split()
CLINICAL_COLUMNS = ("case_id", "age", "sex", "smoking", "crp")
# Independent random streams per case.
_GEOMETRY, _IMAGE, _REPORT, _CLINICAL, _HEADER, _FILES = range(6)


@dataclass(frozen=True)
class _CaseContext:
    index: int
    case_id: str
    label: int
    seed: int
    options: CohortOptions

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.index, stream]))


def _balanced_labels(n_cases: int, seed: int) -> list[int]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))
    return [int(x) for x in rng.permutation([i % 2 for i in range(n_cases)])]


def _study_header(ctx: _CaseContext, clinical: ClinicalTruth) -> StudyHeader:
    rng = ctx.rng(_HEADER)
    study_day = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 5 * 365)))
    birth_day = study_day - dt.timedelta(days=int(clinical.age * 365.25 + rng.integers(1, 360)))
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    entropy = ("medplug-sampledata", str(ctx.seed), ctx.options.fingerprint(), ctx.case_id)
    number = ctx.index + 1
    return StudyHeader(
        patient_name=f"SYNTHETIC^CASE{number:04d}",
        patient_id=f"MEDPLUG-SYN-{number:04d}",
        birth_date=birth_day.strftime("%Y%m%d"),
        sex=clinical.sex,
        age_years=clinical.age,
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"SYN{int(rng.integers(10**6, 10**7))}",
        study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
        series_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*entropy, "frame"]),
        uid_entropy=entropy,
    )


def _save_nifti(array: np.ndarray, geometry: SeriesGeometry, path: Path) -> None:
    image = nib.Nifti1Image(array, geometry.affine_ras())
    image.header.set_qform(geometry.affine_ras(), code=1)  # scanner coordinates
    image.header.set_sform(geometry.affine_ras(), code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"medplug synthetic phantom"
    nib.save(image, path)


def _generate_case(ctx: _CaseContext, out_dir: Path) -> dict[str, Any]:
    options = ctx.options
    case_dir = out_dir / "cases" / ctx.case_id
    case_dir.mkdir(parents=True)

    clinical = draw_clinical(ctx.rng(_CLINICAL), ctx.label, options.clinical_signal)
    geometry = draw_geometry(
        ctx.rng(_GEOMETRY), options.shape, options.pixel_spacing_mm, options.slice_spacing_mm
    )
    image_rng = ctx.rng(_IMAGE)
    lesion = draw_lesion(image_rng, geometry, options.lesion_diameter_mm)
    visible = ctx.label == 1 and image_rng.random() < options.lesion_visible_prob
    mask = lesion_mask(geometry, lesion) if visible else np.zeros(geometry.shape, dtype=bool)
    volume = render_volume(
        image_rng, geometry, mask if visible else None, options.lesion_contrast_hu, options.noise_hu
    )

    header = _study_header(ctx, clinical)
    write_ct_series(
        volume, geometry, header, variant_for_case(ctx.index), case_dir / "dicom", ctx.rng(_FILES)
    )
    _save_nifti(volume, geometry, case_dir / "image.nii.gz")
    _save_nifti(mask.astype(np.uint8), geometry, case_dir / "lesion_mask.nii.gz")

    report_rng = ctx.rng(_REPORT)
    agrees = report_rng.random() < options.report_agreement
    says_lesion = bool(ctx.label) == agrees
    # A report contradicting a no-lesion label describes the (undrawn) lesion it imagines.
    finding = ReportFinding(lesion.diameter_mm, lesion.lobe) if says_lesion else ReportFinding()
    report = write_report(report_rng, finding, clinical.age, clinical.sex, clinical.smoking)
    (case_dir / "report.txt").write_text(report, encoding="utf-8")

    shown = with_missing(ctx.rng(_CLINICAL + 100), clinical, options.missing_rate)
    relative = Path("cases") / ctx.case_id
    return {
        "case_id": ctx.case_id,
        "label": ctx.label,
        "label_name": LABEL_NAMES[ctx.label],
        "dicom_dir": (relative / "dicom").as_posix(),
        "nifti": (relative / "image.nii.gz").as_posix(),
        "lesion_mask": (relative / "lesion_mask.nii.gz").as_posix(),
        "report_path": (relative / "report.txt").as_posix(),
        "report_text": report,
        "study_uid": header.study_uid,
        "series_uid": header.series_uid,
        "accession": header.accession,
        **shown,
    }


def _prepare_out_dir(out_dir: Path) -> None:
    """Refuse to write into an unrelated non-empty folder; clear an earlier cohort."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "manifest.csv").is_file():
            raise DataError(
                f"{out_dir}: folder is not empty and holds no sample cohort (manifest.csv); "
                "choose an empty or new folder"
            )
        shutil.rmtree(out_dir / "cases", ignore_errors=True)
        for name in ("manifest.csv", "clinical.csv"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, columns: tuple[str, ...] | list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in columns})


def generate_cohort(
    out_dir: str | Path,
    n_cases: int = 24,
    seed: int = 0,
    *,
    on_case_done: Callable[[str], None] | None = None,
    **options: Any,
) -> Path:
    """Write a synthetic cohort (layout in docs/DEVELOPING.md) and return its folder.

    ``options`` are the fields of ``CohortOptions`` (e.g. ``lesion_contrast_hu``,
    ``report_agreement``, ``clinical_signal``); ``on_case_done(case_id)`` is called
    after each case, for progress bars.
    """
    if n_cases < 1:
        raise DataError(f"n_cases must be at least 1, got {n_cases}")
    cohort_options = CohortOptions.from_kwargs(**options)
    out = Path(out_dir)
    _prepare_out_dir(out)
    rows = []
    for index, label in enumerate(_balanced_labels(n_cases, seed)):
        ctx = _CaseContext(index, f"case{index + 1:04d}", label, seed, cohort_options)
        rows.append(_generate_case(ctx, out))
        if on_case_done is not None:
            on_case_done(ctx.case_id)
    _write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    _write_csv(out / "clinical.csv", CLINICAL_COLUMNS, rows)
    return out
