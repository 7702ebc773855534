"""medplug batch on a folder: outputs, SR validity, error isolation, de-identification, resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from batch_support import (
    dciodvfy_errors,
    env_with,
    tool,
)
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from medplug.batch.destinations import DicomwebDestination, DimseDestination, parse_destination
from medplug.batch.journal import Journal
from medplug.batch.manifest import Manifest
from medplug.contract import Prediction
from medplug.dicom_out.deidentify import (
    REMOVED,
    PseudonymMap,
    deidentify,
    deidentify_provenance,
    scrub_token_attributions,
)
from medplug.dicom_out.heatmap_sc import build_heatmap_sc
from medplug.dicom_out.sr import SrIdentity, build_sr
from medplug.errors import DataError, MedplugError
from medplug.ingest import LOAD_CATEGORIES

needs_dciodvfy = pytest.mark.skipif(tool("dciodvfy") is None, reason="dciodvfy not installed")


def run_medplug(args: list[str], site: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", *args],
        env=env_with(site) | kwargs.pop("env", {}),
        capture_output=True,
        text=True,
        **kwargs,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cohort_rows(cohort: Path) -> list[dict]:
    with (cohort / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def case_headers(cohort: Path, case_id: str) -> list[pydicom.Dataset]:
    folder = cohort / "cases" / case_id / "dicom"
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


# --------------------------------------------------------------------------- SR and SC


@needs_dciodvfy
def test_sr_and_heatmap_are_valid_dicom_in_the_source_study(
    sample_cohort: Path, tmp_path: Path
) -> None:
    headers = case_headers(sample_cohort, "case0001")
    prediction = Prediction(
        plugin="image-classifier",
        plugin_version="0.3.1",
        case_id="c",
        label="lesion",
        probabilities={"no_lesion": 0.25, "lesion": 0.75},
    )
    sr = build_sr([prediction], headers, SrIdentity.new())
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []

    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == headers[0].StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert len(series.ReferencedSOPSequence) == len(headers)
    text = str(sr)
    assert "image-classifier" in text and "0.3.1" in text  # algorithm name and version
    assert "Algorithm Name" in text and "Probability of lesion" in text
    values = [float(v) for v in _num_values(sr)]
    assert sorted(values) == [0.25, 0.75]
    codes = _code_values(sr)
    assert "lesion" in codes  # the result as a coded qualitative evaluation

    image = np.random.default_rng(0).normal(size=(64, 64, 32)).astype(np.float32)
    heat = np.zeros_like(image)
    heat[30:40, 30:40, 12] = 1.0
    sc = build_heatmap_sc(image, heat, headers[0], "1.2.3.4", "1.2.3.4.5")
    sc.save_as(tmp_path / "sc.dcm")
    assert dciodvfy_errors(tmp_path / "sc.dcm") == []
    assert pydicom.dcmread(tmp_path / "sc.dcm").pixel_array.shape == (64, 64, 3)

    pseudonyms = PseudonymMap(tmp_path / "map.sqlite")
    for name in ("sr", "sc"):
        ds = deidentify(pydicom.dcmread(tmp_path / f"{name}.dcm"), pseudonyms)
        ds.save_as(tmp_path / f"{name}-deid.dcm")
        assert dciodvfy_errors(tmp_path / f"{name}-deid.dcm") == []
        assert ds.PatientID != headers[0].PatientID and ds.PatientIdentityRemoved == "YES"
        assert pseudonyms.original("uid", ds.StudyInstanceUID) == headers[0].StudyInstanceUID
        raw = (tmp_path / f"{name}-deid.dcm").read_bytes()
        for secret in (headers[0].StudyInstanceUID, headers[0].PatientID, headers[0].StudyDate):
            assert str(secret).encode() not in raw


def test_report_word_attributions_are_scrubbed_not_dropped() -> None:
    words = ("seen by dr . john smith on 2021 - 03 - 04 , mrn 123 ##4567 . call ( 555 ) "
             "123 - 4567 . mild cardio ##megaly , no nodule . xxxx").split()  # fmt: skip
    attributions = [(word, float(i)) for i, word in enumerate(words)]
    scrubbed = scrub_token_attributions(attributions)
    assert [score for _, score in scrubbed] == [score for _, score in attributions]
    kept = [token for token, _ in scrubbed]
    for secret in ("john", "smith", "2021", "03", "04", "123", "##4567", "555"):
        assert secret not in kept
    for word in ("seen", "dr", "mild", "cardio", "##megaly", "nodule", "xxxx"):
        assert word in kept  # clinical words and the title stay readable


def test_plugin_provenance_is_pseudonymised_under_deidentify(tmp_path: Path) -> None:
    pseudonyms = PseudonymMap(tmp_path / "map.sqlite")
    study, series = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    provenance = {  # what the image plugin records
        "input_study_uid": study,
        "input_series_uid": series,
        "input_source": "/pacs/DOE_JOHN/ct",
        "input_shape": [64, 64, 32],
        "model_dir": "/models/image-classifier",
        "note": "read on 2021-03-04",
    }
    cleaned = deidentify_provenance(provenance, pseudonyms)
    assert cleaned["input_study_uid"] == pseudonyms.pseudonym("uid", study) != study
    assert pseudonyms.original("uid", cleaned["input_series_uid"]) == series
    assert cleaned["input_source"] == REMOVED and "DOE" not in json.dumps(cleaned)
    assert cleaned["input_shape"] == [64, 64, 32]
    assert cleaned["model_dir"] == "/models/image-classifier"
    assert "2021" not in cleaned["note"]


def _walk(ds: pydicom.Dataset):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _num_values(sr: pydicom.Dataset) -> list[str]:
    return [i.MeasuredValueSequence[0].NumericValue for i in _walk(sr) if i.ValueType == "NUM"]


def _code_values(sr: pydicom.Dataset) -> list[str]:
    return [i.ConceptCodeSequence[0].CodeValue for i in _walk(sr) if i.ValueType == "CODE"]


# --------------------------------------------------------------------------- small units


def test_destinations_manifest_and_journal_reject_bad_input(tmp_path: Path) -> None:
    assert isinstance(parse_destination("http://127.0.0.1:8042/dicom-web"), DicomwebDestination)
    dimse = parse_destination("ORTHANC@127.0.0.1:4242")
    assert isinstance(dimse, DimseDestination) and dimse.port == 4242
    with pytest.raises(MedplugError, match="neither an http"):
        parse_destination("somewhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,report_text\nx,y\n")
    with pytest.raises(DataError, match="needs a 'study_uid' or 'accession'"):
        Manifest.read(bad)
    journal = Journal(tmp_path / "j.sqlite")
    journal.check_settings({"plugins": ["a"]})
    with pytest.raises(MedplugError, match="started with settings"):
        journal.check_settings({"plugins": ["b"]})


# --------------------------------------------------------------------------- folder batch


def make_source(cohort: Path, root: Path, n_good: int) -> tuple[Path, Path]:
    """A folder source: ``n_good`` cohort studies, one corrupt, one 2D-only; and a manifest."""
    source = root / "source"
    rows = cohort_rows(cohort)[: n_good + 1]
    for row in rows:
        shutil.copytree(cohort / row["dicom_dir"], source / row["case_id"])
    (source / "notes.txt").write_text("not dicom")
    corrupt = source / rows[-1]["case_id"]
    victim = sorted(corrupt.iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:-3000])  # header intact, pixels truncated
    # A study whose only series is one 2D image: unsupported by a 3D plugin.
    single = pydicom.dcmread(sorted((source / rows[0]["case_id"]).iterdir())[0])
    single.StudyInstanceUID, single.SeriesInstanceUID = pydicom.uid.generate_uid(), "1.2.3.9"
    single.SOPInstanceUID = pydicom.uid.generate_uid()
    (source / "single").mkdir()
    single.save_as(source / "single" / "one.dcm")
    # The manifest feeds report text; one report triggers a plugin error.
    rows[1]["report_text"] = "FAIL-THIS-STUDY"
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return source, manifest


@needs_dciodvfy
def test_folder_batch_writes_one_record_per_study_and_isolates_bad_ones(
    sample_cohort: Path, intensity_site: Path, intensity_dir: Path, tmp_path: Path
) -> None:
    source, manifest = make_source(sample_cohort, tmp_path, n_good=4)
    rows = cohort_rows(sample_cohort)[:5]
    out = tmp_path / "out"
    result = run_medplug(
        ["batch", str(source), "--plugin", "mean-intensity", "--model", str(intensity_dir),
         "--out", str(out), "--manifest", str(manifest), "--workers", "2", "--no-progress"],
        intensity_site,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 6 and len({r["study"] for r in records}) == 6
    by_uid = {r["study_uid"]: r for r in records}
    assert {row["study_uid"] for row in rows} <= set(by_uid)

    good = [by_uid[row["study_uid"]] for row in (rows[0], rows[2], rows[3])]
    # The SR cites every instance of the series, from the headers the decoder scanned.
    headers = case_headers(sample_cohort, rows[0]["case_id"])
    sr = pydicom.dcmread(out / good[0]["provenance"]["files"]["sr"])
    assert sr.PatientID == headers[0].PatientID and sr.StudyDate == headers[0].StudyDate
    (cited_series,) = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert cited_series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    cited = {item.ReferencedSOPInstanceUID for item in cited_series.ReferencedSOPSequence}
    assert cited == {h.SOPInstanceUID for h in headers}
    for record in good:
        assert record["status"] == "ok"
        (res,) = record["results"]
        assert res["plugin"] == "mean-intensity" and res["version"] == "1.2.0"
        assert set(res["prediction"]["probabilities"]) == {"no_lesion", "lesion"}
        assert record["timing"]["total_s"] > 0 and record["provenance"]["instances"] == 32
        assert dciodvfy_errors(out / record["provenance"]["files"]["sr"]) == []
        assert dciodvfy_errors(out / record["provenance"]["files"]["heatmap:mean-intensity"]) == []
        probabilities = res["prediction"]["probabilities"]
        assert res["prediction"]["label"] == max(probabilities, key=probabilities.get)
        report = DiagnosticReport.model_validate_json(
            (out / record["provenance"]["files"]["fhir"]).read_text()
        )
        assert report.imagingStudy[0].identifier.value == f"urn:oid:{record['study_uid']}"
        (observation,) = [r for r in report.contained if r.get_resource_type() == "Observation"]
        assert observation.valueCodeableConcept.coding[0].code == res["prediction"]["label"]

    failed = by_uid[rows[1]["study_uid"]]
    assert failed["status"] == "error"
    assert failed["errors"][0]["stage"] == "predict"
    assert "test trigger" in failed["errors"][0]["message"]
    corrupt = by_uid[rows[4]["study_uid"]]
    assert corrupt["status"] == "error" and corrupt["errors"][0]["stage"] == "load"
    assert corrupt["errors"][0]["reason"] in LOAD_CATEGORIES
    single = next(r for r in records if r["study_uid"] not in {row["study_uid"] for row in rows})
    assert single["status"] == "error"
    assert "expects a 3D image" in single["errors"][0]["message"]

    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert len(summary) == 6 and sum(row["status"] == "error" for row in summary) == 3
    log = (out / "batch.log").read_text()
    for row in rows:  # identifiers never in logs, only their hashes
        assert row["study_uid"] not in log and row["accession"] not in log
    assert all(r["study"] in log for r in records)


def test_a_plugin_that_cannot_load_stops_the_batch_before_any_study(
    sample_cohort: Path, intensity_site: Path, tmp_path: Path
) -> None:
    """Plugins load on a thread during discovery; their error still ends the run cleanly."""
    source, manifest = make_source(sample_cohort, tmp_path, n_good=2)
    out = tmp_path / "out"
    result = run_medplug(
        ["batch", str(source), "--plugin", "mean-intensity", "--model", str(tmp_path / "none"),
         "--out", str(out), "--workers", "2", "--no-progress"],
        intensity_site,
    )  # fmt: skip
    assert result.returncode != 0
    assert "has no model folder" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "results.jsonl").exists()


def test_deidentified_outputs_use_a_consistent_local_pseudonym_map(
    sample_cohort: Path, intensity_site: Path, intensity_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    row = cohort_rows(sample_cohort)[0]
    shutil.copytree(sample_cohort / row["dicom_dir"], source / "a")
    pseudonym_map = tmp_path / "private" / "pseudonyms.sqlite"
    records = []
    for name in ("out1", "out2"):
        result = run_medplug(
            ["batch", str(source), "--plugin", "mean-intensity", "--model", str(intensity_dir),
             "--out", str(tmp_path / name), "--deidentify", "--pseudonym-map",
             str(pseudonym_map), "--workers", "0", "--no-progress"],
            intensity_site,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        (record,) = read_jsonl(tmp_path / name / "results.jsonl")
        records.append(record)
        for path in (tmp_path / name).rglob("*"):
            if path.is_file() and path.suffix in (".dcm", ".jsonl", ".csv", ".log", ".json"):
                raw = path.read_bytes()
                assert row["study_uid"].encode() not in raw, path
                assert row["accession"].encode() not in raw, path
        sr = pydicom.dcmread(tmp_path / name / record["provenance"]["files"]["sr"])
        assert sr.PatientIdentityRemoved == "YES"
        fhir = json.loads((tmp_path / name / record["provenance"]["files"]["fhir"]).read_text())
        assert fhir["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{sr.StudyInstanceUID}"
        if tool("dciodvfy"):
            for written in ("sr", "heatmap:mean-intensity"):  # the SR and the Parametric Map
                assert (
                    dciodvfy_errors(tmp_path / name / record["provenance"]["files"][written]) == []
                )
    assert records[0]["study_uid"] == records[1]["study_uid"]  # same pseudonym both times
    assert PseudonymMap(pseudonym_map).original("uid", records[0]["study_uid"]) == row["study_uid"]


# --------------------------------------------------------------------------- kill -9 and resume


def test_kill_9_mid_batch_then_rerun_gives_every_study_exactly_once(
    sample_cohort: Path, intensity_site: Path, intensity_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["batch", str(sample_cohort / "cases"), "--plugin", "mean-intensity",
            "--model", str(intensity_dir), "--out", str(out), "--workers", "1",
            "--batch-size", "1", "--no-progress"]  # fmt: skip
    slow = {"MEDPLUG_TEST_PLUGIN_SLEEP": "0.3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "medplug.cli.main", *args],
        env=env_with(intensity_site) | slow,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: kill it and its workers at once
    )
    journal = out / "journal.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and process.poll() is None:
        if journal.exists():
            try:
                with sqlite3.connect(journal) as db:
                    done = db.execute("SELECT COUNT(*) FROM studies WHERE state='done'").fetchone()[
                        0
                    ]
            except sqlite3.OperationalError:
                done = 0
            if done >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the batch finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with sqlite3.connect(journal) as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())
    assert 3 <= states.get("done", 0) < 12

    result = run_medplug(args, intensity_site)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "results.jsonl")
    uids = [r["study_uid"] for r in records]
    assert sorted(uids) == sorted(row["study_uid"] for row in cohort_rows(sample_cohort))
    assert all(r["status"] == "ok" for r in records)
    assert len(list((out / "sr").glob("*.dcm"))) == 12
    assert not list(out.rglob("*.partial"))
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert len(summary) == 12
