"""Helpers for the batch tests: a small real plugin, installed as its own distribution.

The plugin is deliberately simple (mean intensity through a logistic curve)
but real: found through the ``medplug.plugins`` entry point, loaded from a
model folder, batched through ``predict_batch``, with a heatmap explanation.
A report containing ``FAIL-THIS-STUDY`` makes it raise, to test that one
failing study does not stop a batch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from plugin_distribution import install_plugin_distribution

# The private Orthanc lives in medplug (``make viewer`` starts one too); re-exported here.
from medplug.orthanc import DICOMWEB_PLUGIN, ORTHANC, OrthancServer, free_port, tool

__all__ = ["DICOMWEB_PLUGIN", "ORTHANC", "OrthancServer", "free_port", "tool"]

INTENSITY_PLUGIN = '''
import json
import os
import time
from pathlib import Path

import numpy as np

from medplug.contract import Case, Explanation, InputSpec, Plugin, PluginInfo, Prediction
from medplug.errors import PluginError


class MeanIntensityPlugin(Plugin):
    """Lesion probability from mean image intensity; real enough to exercise a batch."""

    name = "mean-intensity"
    batch_calls = 0

    def __init__(self, centre: float, scale: float) -> None:
        self.centre, self.scale = centre, scale
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name, version="1.2.0", task="classification",
            labels=["no_lesion", "lesion"],
            inputs={"image": InputSpec(kind="image", spatial_dims=3),
                    "report": InputSpec(kind="text", required=False)},
        )

    @classmethod
    def from_pretrained(cls, model_dir):
        config = json.loads((Path(model_dir) / "intensity.json").read_text())
        return cls(config["centre"], config["scale"])

    def _predict(self, case: Case) -> Prediction:
        time.sleep(float(os.environ.get("MEDPLUG_TEST_PLUGIN_SLEEP", "0")))
        if case.report and "FAIL-THIS-STUDY" in case.report:
            raise PluginError("model refused this study (test trigger)")
        array = case.image.array.astype(np.float32)
        p = float(1.0 / (1.0 + np.exp(-(array.mean() - self.centre) / self.scale)))
        heat = (array - array.min()) / (np.ptp(array) or 1.0)
        return Prediction(
            plugin=self.name, plugin_version="1.2.0", case_id=case.case_id,
            label="lesion" if p >= 0.5 else "no_lesion",
            probabilities={"no_lesion": 1.0 - p, "lesion": p},
            explanation=Explanation(heatmap=heat, heatmap_affine=case.image.affine),
            provenance={"model": "intensity.json"},
        )

    def predict_batch(self, cases):
        type(self).batch_calls += 1
        return [self.predict(case) for case in cases]
'''


def install_intensity_plugin(root: Path) -> Path:
    """Build and install the plugin distribution into ``root/site``; returns that folder."""
    return install_plugin_distribution(
        root,
        "acme-medplug-intensity",
        "acme_intensity",
        INTENSITY_PLUGIN,
        {"mean-intensity": "acme_intensity:MeanIntensityPlugin"},
        version="1.2.0",
    )


def intensity_model(folder: Path, centre: float = 0.0, scale: float = 50.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "intensity.json").write_text(f'{{"centre": {centre}, "scale": {scale}}}')
    return folder


def env_with(site: Path) -> dict[str, str]:
    """Environment for a ``medplug`` subprocess that sees the plugin distribution."""
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), COLUMNS="200")


def dciodvfy_errors(path: Path) -> list[str]:
    """Every ``Error`` line dciodvfy prints for ``path``."""
    result = subprocess.run(
        [tool("dciodvfy") or "dciodvfy", str(path)], capture_output=True, text=True
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if "Error" in line]
