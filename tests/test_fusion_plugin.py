"""Fusion plugin: survival head, clinical preprocessing, missing inputs, save/load, Shapley."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2, load_rossi

from medplug.contract import Case, ImageVolume
from medplug.errors import MissingInputError, ModelFileError
from medplug.registry import load_plugin
from medplug_fusion.config import FusionConfig
from medplug_fusion.fit import fit_fusion
from medplug_fusion.manifest import read_manifest
from medplug_fusion.plugin import FusionPlugin
from medplug_fusion.survival import concordance, cox_partial_likelihood

GBSG_FIELDS = ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec"]


def gbsg_cases(frame: pd.DataFrame) -> list[Case]:
    return [
        Case(case_id=f"gbsg{i}", clinical={k: row[k] for k in GBSG_FIELDS})
        for i, row in frame.iterrows()
    ]


@pytest.fixture(scope="module")
def gbsg_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load_gbsg2().sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame.iloc[:480], frame.iloc[480:]


@pytest.fixture(scope="module")
def survival_plugin(gbsg_split, tmp_path_factory) -> tuple[FusionPlugin, Path]:
    train, _ = gbsg_split
    config = FusionConfig(
        task="survival", batch_size=128, max_epochs=80, survival_times=[365, 1095]
    )
    plugin = fit_fusion(
        gbsg_cases(train),
        config,
        durations=train["time"].to_numpy(),
        events=train["cens"].to_numpy(),
    )
    folder = tmp_path_factory.mktemp("fusion-survival")
    plugin.save_pretrained(folder)
    return plugin, folder


def test_cox_loss_recovers_lifelines_coefficients() -> None:
    """A linear model fitted with our partial likelihood matches lifelines' CoxPH."""
    frame = load_rossi()
    covariates = frame.drop(columns=["week", "arrest"])
    x = ((covariates - covariates.mean()) / covariates.std()).to_numpy()
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    x_t = torch.as_tensor(x)
    durations = torch.as_tensor(frame["week"].to_numpy(), dtype=torch.float64)
    events = torch.as_tensor(frame["arrest"].to_numpy(), dtype=torch.float64)
    optimizer = torch.optim.LBFGS([beta], max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = cox_partial_likelihood(x_t @ beta, durations, events)
        loss.backward()
        return loss

    optimizer.step(closure)
    standardised = pd.DataFrame(x, columns=covariates.columns)
    standardised["week"], standardised["arrest"] = frame["week"], frame["arrest"]
    reference = CoxPHFitter().fit(standardised, "week", "arrest").params_.to_numpy()
    np.testing.assert_allclose(beta.detach().numpy(), reference, atol=0.01)


def test_survival_head_beats_trivial_baseline(survival_plugin, gbsg_split) -> None:
    plugin, _ = survival_plugin
    _, test = gbsg_split
    plugin.explain = False  # explanations are tested below; this test is about the head
    try:
        predictions = plugin.predict_batch(gbsg_cases(test))
    finally:
        plugin.explain = True
    risk = np.array([p.outputs["risk_score"] for p in predictions])
    c_index = concordance(test["time"].to_numpy(), risk, test["cens"].to_numpy())
    assert c_index > 0.62  # a constant risk scores 0.5; CoxPH scores about 0.68 here
    survival = np.array([list(p.outputs["survival_probability"].values()) for p in predictions])
    assert ((survival > 0) & (survival < 1)).all()
    assert (np.diff(survival, axis=1) <= 0).all()  # S(t) falls with t
    # Higher risk must mean lower survival at every time.
    order = np.argsort(risk)
    assert (np.diff(survival[order], axis=0) <= 1e-12).all()


def test_unseen_categories_and_missing_values_predict_with_warnings(survival_plugin) -> None:
    plugin, _ = survival_plugin
    case = Case(
        case_id="odd",
        clinical={"horTh": "unknown-therapy", "age": None, "tgrade": "IV", "tsize": "n/a"},
    )
    prediction = plugin.predict(case)
    assert np.isfinite(prediction.outputs["risk_score"])
    text = " ".join(prediction.warnings)
    assert "not seen in training" in text and "horTh" in text and "tgrade" in text
    assert "tsize" in text and "not a number" in text


def test_case_without_usable_input_gets_clear_error(survival_plugin) -> None:
    plugin, _ = survival_plugin
    with pytest.raises(MissingInputError, match="case 'empty'.*none of them"):
        plugin.predict(Case(case_id="empty", clinical={"age": None}))
    # In a batch the bad case fails alone, with the same message; the others are predicted.
    good, bad = plugin.predict_batch([gbsg_cases(load_gbsg2().iloc[:1])[0], Case(case_id="e2")])
    assert not good.failed and np.isfinite(good.outputs["risk_score"])
    assert bad.failed and bad.error["type"] == "MissingInputError"
    assert "case 'e2'" in bad.error["message"]


def test_saved_survival_model_reloads_to_identical_outputs(survival_plugin, gbsg_split) -> None:
    plugin, folder = survival_plugin
    cases = gbsg_cases(gbsg_split[1].iloc[:20])
    reloaded = load_plugin("fusion", folder)
    for before, after in zip(
        plugin.predict_batch(cases), reloaded.predict_batch(cases), strict=True
    ):
        assert before.outputs == after.outputs
        assert before.explanation.feature_attributions == after.explanation.feature_attributions


def test_clinical_field_attributions_sum_to_clinical_effect(survival_plugin, gbsg_split) -> None:
    plugin, _ = survival_plugin
    prediction = plugin.predict(gbsg_cases(gbsg_split[1].iloc[:1])[0])
    fields = prediction.explanation.feature_attributions
    assert set(fields) == set(GBSG_FIELDS)
    # Only one modality here, so its contribution is the whole clinical effect.
    total = prediction.explanation.modality_contributions["clinical"]
    assert sum(fields.values()) == pytest.approx(total, abs=1e-6)
    assert total == pytest.approx(
        prediction.outputs["score"] - prediction.outputs["baseline_score"], abs=1e-6
    )


def test_tampered_model_folder_is_refused(survival_plugin, tmp_path) -> None:
    import shutil

    _, folder = survival_plugin
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with (copy / "clinical.json").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFileError, match="clinical.json"):
        FusionPlugin.from_pretrained(copy)


# --------------------------------------------------------------------------- with the real
# image and report plugins, trained by their own `medplug train` commands on a generated cohort


def medplug_cli(*args: str):
    """Run a ``medplug`` command in-process (one interpreter start for all of them)."""
    from typer.testing import CliRunner

    from medplug.cli.main import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output or "")[-3000:] + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def fused_setup(tmp_path_factory) -> dict:
    """Cohort, image/report models from their trainers, and a fusion model trained by CLI."""
    from medplug.sampledata import generate_cohort

    root = tmp_path_factory.mktemp("fusion-cohort")
    cohort = generate_cohort(root / "cohort", n_cases=32, seed=3, missing_rate=0.15)
    manifest = str(cohort / "manifest.csv")
    image_dir, report_dir, fusion_dir = root / "image", root / "report", root / "fusion"
    medplug_cli(
        "train",
        "image",
        "--data",
        manifest,
        "--config",
        "demo",
        "--image-column",
        "nifti",
        "--epochs",
        "2",
        "--out",
        str(image_dir),
    )
    medplug_cli(
        "train",
        "text",
        "--data",
        manifest,
        "--text-col",
        "report_text",
        "--label-col",
        "label",
        "--preset",
        "demo",
        "--epochs",
        "2",
        "--label-names",
        "no_lesion,lesion",
        "--out",
        str(report_dir),
    )
    config = root / "fusion.json"
    config.write_text(
        json.dumps(
            {
                "task": "classification",
                "image": {"plugin": "image-classifier", "model_dir": str(image_dir)},
                "report": {"plugin": "report-classifier", "model_dir": str(report_dir)},
                "max_epochs": 40,
                "ensemble": 2,
            }
        )
    )
    medplug_cli(
        "train", "fusion", "--manifest", manifest, "--config", str(config), "--out", str(fusion_dir)
    )
    data = read_manifest(cohort / "manifest.csv", image_columns=("nifti",))
    return {
        "cohort": cohort,
        "fusion_dir": fusion_dir,
        "image_dir": image_dir,
        "report_dir": report_dir,
        "data": data,
    }


def test_fused_prediction_names_missing_modalities(fused_setup) -> None:
    plugin = load_plugin("fusion", fused_setup["fusion_dir"])
    full, no_report, no_image = fused_setup["data"].cases[:3]
    no_report.report = None
    no_image.images = []
    predictions = plugin.predict_batch([full, no_report, no_image])
    assert not any("missing (" in w for w in predictions[0].warnings)
    assert any(w.startswith("report missing") for w in predictions[1].warnings)
    assert any(w.startswith("image missing") for w in predictions[2].warnings)
    assert predictions[1].provenance["modalities_used"] == ["image", "clinical"]
    for prediction in predictions:
        assert set(prediction.probabilities) == {"no_lesion", "lesion"}
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.label in ("no_lesion", "lesion")
    # Only the report is left: still a prediction, with two warnings.
    report_only = Case(case_id="report-only", report=full.report)
    warnings = plugin.predict(report_only).warnings
    assert {w.split()[0] for w in warnings if "missing (" in w} == {"image", "clinical"}


def test_modality_contributions_sum_to_prediction_minus_baseline(fused_setup) -> None:
    plugin = load_plugin("fusion", fused_setup["fusion_dir"])
    cases = fused_setup["data"].cases[:6]
    cases[1].report = None
    cases[2].images = []
    cases[3].clinical = {}
    for prediction in plugin.predict_batch(cases):
        contributions = prediction.explanation.modality_contributions
        assert set(contributions) == {"image", "report", "clinical"}
        gap = prediction.outputs["score"] - prediction.outputs["baseline_score"]
        assert sum(contributions.values()) == pytest.approx(gap, abs=1e-6)
        assert prediction.outputs["score"] == pytest.approx(prediction.probabilities["lesion"])
    predictions = plugin.predict_batch(cases[1:4])
    assert predictions[0].explanation.modality_contributions["report"] == 0.0
    assert predictions[1].explanation.modality_contributions["image"] == 0.0
    assert predictions[2].explanation.modality_contributions["clinical"] == 0.0
    assert predictions[2].explanation.feature_attributions == {}


def test_fusion_reuses_embeddings_its_own_models_already_gave(fused_setup) -> None:
    """In a pipeline (``medplug batch``) the image and report models do not run twice."""
    fusion = load_plugin("fusion", fused_setup["fusion_dir"])
    cases = copy.deepcopy(fused_setup["data"].cases[8:14])  # other tests change 0-5
    computed = fusion.predict_batch(cases)
    for name, folder in (("image-classifier", "image_dir"), ("report-classifier", "report_dir")):
        plugin = load_plugin(name, fused_setup[folder])
        plugin.keep_embeddings(cases, plugin.predict_batch(cases))
    assert {len(case.embeddings) for case in cases} == {2}

    def must_not_run(_cases):
        raise AssertionError("fusion recomputed an embedding it was given")

    for source in fusion.sources.values():
        source.plugin.embed_batch = must_not_run
    reused = fusion.predict_batch(cases)
    for before, after in zip(computed, reused, strict=True):
        assert after.probabilities == pytest.approx(before.probabilities, abs=1e-6)
    # An embedding from another model (different model folder) is not taken.
    other = Case(case_id="other", images=cases[0].images, report=cases[0].report)
    other.embeddings = {
        key.split(":")[0] + ":another-model": v for key, v in cases[0].embeddings.items()
    }
    with pytest.raises(AssertionError, match="recomputed"):
        fusion.predict_batch([other])


def test_fusion_given_every_embedding_never_loads_its_embedding_models(fused_setup) -> None:
    """``medplug batch`` hands fusion both embeddings: loading the models again is waste."""
    cases = copy.deepcopy(fused_setup["data"].cases[8:12])
    versions = {}
    for name, folder in (("image-classifier", "image_dir"), ("report-classifier", "report_dir")):
        plugin = load_plugin(name, fused_setup[folder])
        plugin.keep_embeddings(cases, plugin.predict_batch(cases))
        versions[name] = plugin.info.version
    fusion = load_plugin("fusion", fused_setup["fusion_dir"])
    predictions = fusion.predict_batch(cases)
    assert all(source._plugin is None for source in fusion.sources.values())
    assert predictions[0].provenance["embedding_plugins"] == {
        "image": {"plugin": "image-classifier", "version": versions["image-classifier"]},
        "report": {"plugin": "report-classifier", "version": versions["report-classifier"]},
    }
    # A case without them makes fusion load the model it needs, and only then.
    fusion.predict_batch([copy.deepcopy(fused_setup["data"].cases[12])])
    assert all(source._plugin is not None for source in fusion.sources.values())


def test_rejected_input_becomes_a_gap_not_a_crash(fused_setup) -> None:
    plugin = load_plugin("fusion", fused_setup["fusion_dir"])
    good, bad = fused_setup["data"].cases[4:6]
    bad.images = [ImageVolume(array=np.zeros((16, 16), dtype=np.float32))]  # 2D, model is 3D
    predictions = plugin.predict_batch([good, bad])
    assert not any(w.startswith("image missing") for w in predictions[0].warnings)
    assert any(w.startswith("image missing") and "InputError" in w for w in predictions[1].warnings)


def test_fused_model_reloads_to_identical_outputs(fused_setup, tmp_path) -> None:
    plugin = load_plugin("fusion", fused_setup["fusion_dir"])
    cases = fused_setup["data"].cases[:8]
    plugin.save_pretrained(tmp_path / "again")
    reloaded = FusionPlugin.from_pretrained(tmp_path / "again")
    pairs = zip(plugin.predict_batch(cases), reloaded.predict_batch(cases), strict=True)
    for before, after in pairs:
        assert before.probabilities == after.probabilities
        assert before.explanation.modality_contributions == (
            after.explanation.modality_contributions
        )
        np.testing.assert_array_equal(before.embedding, after.embedding)


def test_evaluate_writes_auc_with_ci_and_plots(fused_setup, tmp_path) -> None:
    out = tmp_path / "evaluation"
    result = medplug_cli(
        "evaluate",
        "--model",
        str(fused_setup["fusion_dir"]),
        "--data",
        str(fused_setup["cohort"] / "manifest.csv"),
        "--out",
        str(out),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    low, high = metrics["auc_ci95"]
    assert 0.0 <= low <= metrics["auc"] <= high <= 1.0
    assert metrics["n"] == 32
    assert (out / "roc.png").is_file() and (out / "reliability.png").is_file()
    assert "auc" in result.output


def test_survival_evaluate_writes_c_index_with_ci(survival_plugin, gbsg_split, tmp_path) -> None:
    _, folder = survival_plugin
    test = gbsg_split[1].rename(columns={"time": "duration", "cens": "event"})
    test.insert(0, "case_id", [f"t{i}" for i in range(len(test))])
    test.to_csv(tmp_path / "test.csv", index=False)
    medplug_cli(
        "evaluate",
        "--model",
        str(folder),
        "--data",
        str(tmp_path / "test.csv"),
        "--out",
        str(tmp_path / "eval"),
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    low, high = metrics["c_index_ci95"]
    assert 0.5 < low <= metrics["c_index"] <= high
    assert (tmp_path / "eval" / "km_by_risk.png").is_file()
