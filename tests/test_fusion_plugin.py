"""Fusion plugin: survival head, clinical preprocessing, missing inputs, save/load, Shapley."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2, load_rossi
from medplug_fusion.config import FusionConfig
from medplug_fusion.fit import fit_fusion
from medplug_fusion.plugin import FusionPlugin
from medplug_fusion.survival import concordance, cox_partial_likelihood

from medplug.contract import Case
from medplug.errors import MissingInputError, ModelFileError
from medplug.registry import load_plugin

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
    predictions = plugin.predict_batch(gbsg_cases(test))
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
    with pytest.raises(MissingInputError, match="case 'empty2'"):
        plugin.predict_batch([gbsg_cases(load_gbsg2().iloc[:1])[0], Case(case_id="empty2")])


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
    with (copy / "clinical.skops").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFileError, match="clinical.skops"):
        FusionPlugin.from_pretrained(copy)
