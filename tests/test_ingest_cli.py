"""`medplug inspect` and `medplug predict` through the real CLI and plugin registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series
from typer.testing import CliRunner

from medplug.cli.main import app

PLUGIN_SOURCE = '''
from medplug.contract import Case, InputSpec, Plugin, PluginInfo, Prediction

class MeanHU(Plugin):
    """Test plugin: 'dense' when the mean HU is above zero."""
    name = "mean-hu"

    @classmethod
    def describe(cls):
        return PluginInfo(name="mean-hu", version="0.1", task="classification",
                          labels=["soft", "dense"], inputs={"image": InputSpec(kind="image")})

    @classmethod
    def from_pretrained(cls, model_dir):
        plugin = cls()
        plugin.info = cls.describe()
        return plugin

    def _predict(self, case: Case) -> Prediction:
        dense = float(case.image.array.mean() > 0)
        return Prediction(plugin="mean-hu", plugin_version="0.1", case_id=case.case_id,
                          label=["soft", "dense"][int(dense)],
                          probabilities={"soft": 1 - dense, "dense": dense})


class Wordy(Plugin):
    """Test plugin without an image: 'long' for a report of over five words or age over 60."""
    name = "wordy"

    @classmethod
    def describe(cls):
        return PluginInfo(name="wordy", version="0.1", task="classification",
                          labels=["short", "long"],
                          inputs={"report": InputSpec(kind="text", required=False),
                                  "clinical": InputSpec(kind="tabular", required=False)})

    @classmethod
    def from_pretrained(cls, model_dir):
        plugin = cls()
        plugin.info = cls.describe()
        return plugin

    def _predict(self, case: Case) -> Prediction:
        long = float(len((case.report or "").split()) > 5 or case.clinical.get("age", 0) > 60)
        return Prediction(plugin="wordy", plugin_version="0.1", case_id=case.case_id,
                          label=["short", "long"][int(long)],
                          probabilities={"short": 1 - long, "long": long})
'''


@pytest.fixture()
def mean_hu_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed-style plugin: module + .dist-info with an entry point on sys.path."""
    site = tmp_path / "site"
    (site / "mean_hu_test-0.1.dist-info").mkdir(parents=True)
    (site / "mean_hu_test.py").write_text(PLUGIN_SOURCE)
    info = site / "mean_hu_test-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-hu-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[medplug.plugins]\nmean-hu = mean_hu_test:MeanHU\nwordy = mean_hu_test:Wordy\n"
    )
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "model").mkdir()
    yield tmp_path / "model"
    sys.modules.pop("mean_hu_test", None)


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    volume = np.full((16, 16, 6), 40.0, np.float32)
    write_ct_series(tmp_path / "ct", volume)
    return tmp_path / "ct"


def test_predict_runs_plugin_and_prints_table_or_json(series: Path, mean_hu_plugin: Path) -> None:
    runner = CliRunner()
    args = ["predict", str(series), "--plugin", "mean-hu", "--model", str(mean_hu_plugin)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dense" in result.output and "timing" in result.output
    result = runner.invoke(app, [*args, "--json", "--clinical", '{"age": 50}'])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["label"] == "dense" and payload["probabilities"]["dense"] == 1.0


def test_predict_report_alone_or_clinical_alone(mean_hu_plugin: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    report = tmp_path / "case0007" / "report.txt"
    report.parent.mkdir()
    report.write_text("FINDINGS: a long report with more than five words.")
    args = ["predict", "--report", str(report), "--plugin", "wordy", "--model", str(mean_hu_plugin)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["label"] == "long" and payload["case_id"] == "case0007"
    args = ["predict", "--clinical", '{"age": 40}', "--plugin", "wordy"]
    result = runner.invoke(app, [*args, "--model", str(mean_hu_plugin), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["label"] == "short"
    # an image plugin given only a report says what is missing, in one line
    args = ["predict", "--report", str(report), "--plugin", "mean-hu"]
    result = runner.invoke(app, [*args, "--model", str(mean_hu_plugin)])
    assert result.exit_code == 2 and "image" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["predict", "--plugin", "wordy"])
    assert result.exit_code == 2 and "--report" in result.output


def test_predict_errors_are_one_line_exit_2(series: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(series), "--plugin", "no-such-plugin"])
    assert result.exit_code == 2
    assert "no plugin named 'no-such-plugin'" in result.output
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    # An unknown plugin is refused before reading; with a known one the folder is read.
    result = runner.invoke(app, ["predict", str(junk), "--plugin", "image-classifier"])
    assert result.exit_code == 2 and "empty_series" in result.output
    assert "Traceback" not in result.output


def test_inspect_json_lists_selection(series: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(series), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (entry,) = payload["studies"][0]["series"]
    assert entry["selected_rank"] == 0 and entry["rule"] == "volume"
    assert entry["slices"] == 6 and entry["spacing"] == pytest.approx([0.8, 0.7, 2.5])
    assert "SYNTHETIC" not in result.stdout
