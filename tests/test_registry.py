"""Plugin discovery through real installed distributions and entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from plugin_distribution import install_plugin_distribution

from medplug.errors import PluginError, PluginNotFoundError
from medplug.registry import discover, load_plugin, plugin_class

THIRD_PARTY_PLUGIN = '''
from pathlib import Path
from medplug.contract import Case, InputSpec, Plugin, PluginInfo, Prediction


class ReportLengthPlugin(Plugin):
    """Flags long reports; enough to prove a third-party plugin is callable."""

    name = "report-length"

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(name=cls.name, version="0.3", task="classification",
                          labels=["short", "long"],
                          inputs={"report": InputSpec(kind="text")})

    @classmethod
    def from_pretrained(cls, model_dir):
        return cls(int((Path(model_dir) / "threshold.txt").read_text()))

    def _predict(self, case: Case) -> Prediction:
        is_long = len(case.report.split()) > self.threshold
        return Prediction(plugin=self.name, plugin_version="0.3", case_id=case.case_id,
                          label="long" if is_long else "short",
                          probabilities={"short": float(not is_long), "long": float(is_long)})
'''


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install two real distributions into a private target folder:
    a working plugin and one whose import fails."""
    root = tmp_path_factory.mktemp("third_party")
    install_plugin_distribution(
        root,
        "acme-medplug-report-length",
        "acme_report_length",
        THIRD_PARTY_PLUGIN,
        {"report-length": "acme_report_length:ReportLengthPlugin"},
        version="0.3",
    )
    return install_plugin_distribution(
        root,
        "acme-medplug-broken",
        "acme_broken",
        "import a_module_that_does_not_exist\n",
        {"broken-plugin": "acme_broken:Nothing"},
    )


@pytest.fixture
def with_third_party(third_party_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(third_party_site))
    return third_party_site


def test_third_party_plugin_is_discovered_and_callable(
    with_third_party: Path, tmp_path: Path
) -> None:
    from medplug.contract import Case

    entries = {entry.name: entry for entry in discover()}
    assert entries["report-length"].ok
    assert entries["report-length"].distribution == "acme-medplug-report-length"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "threshold.txt").write_text("3")
    plugin = load_plugin("report-length", model_dir)
    prediction = plugin.predict(Case("c1", report="one two three four five"))
    assert prediction.label == "long"


def test_broken_plugin_is_reported_without_hiding_the_others(with_third_party: Path) -> None:
    entries = {entry.name: entry for entry in discover()}
    assert not entries["broken-plugin"].ok
    assert "a_module_that_does_not_exist" in entries["broken-plugin"].error
    assert entries["report-length"].ok
    with pytest.raises(PluginError, match="broken-plugin.*failed to load"):
        plugin_class("broken-plugin")


def test_unknown_plugin_lists_what_is_installed() -> None:
    with pytest.raises(PluginNotFoundError, match="no plugin named 'nope'"):
        plugin_class("nope")


def test_cli_lists_third_party_plugin(with_third_party: Path) -> None:
    import os

    env = dict(os.environ, PYTHONPATH=str(with_third_party), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "report-length" in result.stdout
    assert "broken-plugin" in result.stdout and "failed" in result.stdout
