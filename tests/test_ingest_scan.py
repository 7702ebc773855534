"""Folder scan, header parsing and series selection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series, write_secondary_capture
from pydicom.data import get_testdata_file

from medplug.ingest import SelectionRule, SelectionRuleError, scan_folder, select_series
from medplug.ingest import scan as scan_module
from medplug.ingest.header import _pydicom_header, read_header
from medplug.ingest.selection import explain_selection, load_rules


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder: 6 CT series interleaved, a localizer, a 2D capture, SR, DICOMDIR, junk."""
    root = tmp_path_factory.mktemp("study")
    study_uid = pydicom.uid.generate_uid()
    rng = np.random.default_rng(0)
    for number in range(1, 7):
        write_ct_series(
            root,
            rng.integers(-100, 100, size=(8, 8, 3 + number)).astype(np.float32),
            file_names=[f"IM{k:03d}_{number}" for k in range(3 + number)],
            series_number=number,
            study_uid=study_uid,
            series_description="BODY AXIAL" if number % 2 else "BODY CORONAL MPR",
        )
    write_ct_series(
        root / "scout",
        np.zeros((8, 8, 2), np.float32),
        series_description="Scout localizer",
        series_number=9,
        study_uid=study_uid,
    )
    write_secondary_capture(root / "capture.dcm", np.zeros((10, 12), np.uint16))
    shutil.copy(get_testdata_file("test-SR.dcm"), root / "report.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    (root / "notes.txt").write_text("not dicom")
    (root / "empty.dcm").write_bytes(b"")
    return root


def test_scan_groups_interleaved_series_and_lists_skipped(study: Path) -> None:
    scan = scan_folder(study)
    assert scan.n_files == 6 * 3 + 21 + 2 + 1 + 4
    assert len(scan.studies) == 2  # the CT study and the capture's own study
    ct = [s for s in scan.series if s.modality == "CT"]
    assert sorted(s.n_files for s in ct) == [2, 4, 5, 6, 7, 8, 9]
    categories = {s.path.name: s.category for s in scan.skipped}
    assert categories == {
        "report.dcm": "structured_report",
        "DICOMDIR": "dicomdir",
        "notes.txt": "not_dicom",
        "empty.dcm": "not_dicom",
    }


def test_process_pool_scan_equals_serial(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = scan_folder(study, workers=1)
    monkeypatch.setattr(scan_module, "PROCESS_POOL_MIN_FILES", 1)
    monkeypatch.setattr(scan_module, "_CHUNK", 5)
    parallel = scan_folder(study, workers=2)
    assert [s.series_uid for s in parallel.series] == [s.series_uid for s in serial.series]
    assert [vars(i) for s in parallel.series for i in s.instances] == [
        vars(i) for s in serial.series for i in s.instances
    ]
    assert [(s.path, s.category) for s in parallel.skipped] == [
        (s.path, s.category) for s in serial.skipped
    ]


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small.dcm",
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
        "liver.dcm",
        "rtplan.dcm",
        "SC_rgb.dcm",
        "US1_UNCR.dcm",
        "nested_priv_SQ.dcm",
    ],
)
def test_fast_header_agrees_with_pydicom(name: str) -> None:
    path = Path(get_testdata_file(name))
    fast, slow = vars(read_header(path)), vars(_pydicom_header(path))
    for key in ("pixel_offset", "pixel_length", "extra"):
        fast.pop(key), slow.pop(key)
    assert fast == slow


def test_scan_in_the_callers_worker_processes_equals_serial(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``medplug batch`` hands its own (fork-server) workers to the header scan."""
    from medplug.batch.runner import worker_pool

    serial = scan_folder(study, workers=1)
    monkeypatch.setattr(scan_module, "_CHUNK", 5)  # several chunks, so the pool is used
    with worker_pool(2) as pool:
        mapped = []
        real_map = pool.map
        pool.map = lambda *args, **kwargs: mapped.append(1) or real_map(*args, **kwargs)
        pooled = scan_folder(study, workers=1, pool=pool)
    assert mapped, "the scan did not use the given workers"
    assert [vars(i) for s in pooled.series for i in s.instances] == [
        vars(i) for s in serial.series for i in s.instances
    ]
    assert [(s.path, s.category) for s in pooled.skipped] == [
        (s.path, s.category) for s in serial.skipped
    ]


def test_default_selection_prefers_largest_volume_and_explains(study: Path) -> None:
    scan = scan_folder(study)
    chosen = select_series(scan)
    assert chosen[0].rule == "volume" and chosen[0].series.n_files == 9
    decisions = {d.series.description: d for d in explain_selection(scan)}
    scout = decisions["Scout localizer"]
    assert scout.rule == "any-image"  # only the catch-all rule accepts it
    rank_of_capture = [s.rule for s in chosen if s.series.modality == "OT"]
    assert rank_of_capture == ["any-image"]


def test_rules_from_dicts_json_and_monai_deploy(study: Path, tmp_path: Path) -> None:
    scan = scan_folder(study)
    rule = {"name": "coronal", "modality": "CT", "description": "(?i)coronal", "min_slices": 6}
    chosen = select_series(scan, [rule])
    assert [s.series.number for s in chosen] == [6, 4]
    deploy = {
        "selections": [
            {"name": "ct", "conditions": {"Modality": "(?i)CT", "SeriesDescription": "(?i)axial"}}
        ]
    }
    assert [s.series.number for s in select_series(scan, deploy)] == [5, 3, 1]
    rule_file = tmp_path / "rules.json"
    rule_file.write_text('[{"name": "big", "min_slices": 8}]')
    assert [s.series.number for s in select_series(scan, str(rule_file))] == [6, 5]
    nothing = select_series(scan, [SelectionRule(name="mr", modality=["MR"])])
    assert nothing == []
    why = explain_selection(scan, [SelectionRule(name="mr", modality=["MR"])])
    assert all(d.reasons[0].startswith("mr: modality ") for d in why)


@pytest.mark.parametrize(
    "bad",
    [{"modality": "CT", "colour": "red"}, {"description": "(unclosed"}, {"orientation": "upside"}],
)
def test_bad_rules_raise_clear_errors(bad: dict) -> None:
    with pytest.raises(SelectionRuleError):
        load_rules([bad])
