"""A small, deterministic, clearly synthetic cohort for demos, tests and benchmarks.

``generate_cohort(out_dir, n_cases, seed, **options)`` writes per case a CT
DICOM series (a chest phantom with or without a lung lesion), the same volume
as NIfTI, a lesion mask, a radiology report and clinical fields. See
``docs/sampledata.md`` and ``CohortOptions`` for the knobs.
"""

from medplug.sampledata.cohort import LABEL_NAMES, MANIFEST_COLUMNS, generate_cohort
from medplug.sampledata.dicom_series import SeriesVariant, variant_for_case
from medplug.sampledata.geometry import SeriesGeometry
from medplug.sampledata.options import CohortOptions

__all__ = [
    "LABEL_NAMES",
    "MANIFEST_COLUMNS",
    "CohortOptions",
    "SeriesGeometry",
    "SeriesVariant",
    "generate_cohort",
    "variant_for_case",
]
