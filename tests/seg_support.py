"""A real segmentation plugin for the DICOM output tests, installed as its own distribution.

``threshold-seg`` thresholds the CT in HU (threshold from its model folder):
the mask is ``Prediction.segmentation`` (one segment, "lesion"), and the
smoothed excess over the median is the heatmap, given on a grid twice as
coarse as the input (with its own ``heatmap_affine``), so the writers must
resample it onto the source slices. A report containing ``WRONG-SHAPE-MASK``
makes it return a mask one column short: the contract refuses it, and that
study must get an error record and no object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dicom_factory import write_ct_series
from plugin_distribution import install_plugin_distribution
from pydicom.uid import generate_uid

THRESHOLD_SEG_PLUGIN = """
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

from medplug.contract import (
    Case, Explanation, InputSpec, Plugin, PluginInfo, Prediction, Segment, Segmentation,
)


class ThresholdSegPlugin(Plugin):
    name = "threshold-seg"

    def __init__(self, threshold_hu: float) -> None:
        self.threshold_hu = threshold_hu
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name, version="0.3", task="segmentation",
            labels=["no_lesion", "lesion"],
            inputs={"ct": InputSpec(kind="image", modality="CT", spatial_dims=3),
                    "report": InputSpec(kind="text", required=False)},
            outputs={"segmentation": "lesion mask", "heatmap": "excess over the median"},
        )

    @classmethod
    def from_pretrained(cls, model_dir):
        config = json.loads((Path(model_dir) / "threshold.json").read_text())
        return cls(config["threshold_hu"])

    def _predict(self, case: Case) -> Prediction:
        image = case.image
        array = np.asarray(image.array, dtype=np.float32)
        mask = (array > self.threshold_hu).astype(np.uint8)
        if case.report and "WRONG-SHAPE-MASK" in case.report:
            mask = mask[:-1]
        excess = np.clip(uniform_filter(array - float(np.median(array)), size=3), 0, None)
        coarse = excess[::2, ::2, ::2]  # the "network grid": every other voxel
        coarse_affine = image.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
        found = bool(mask.any())
        return Prediction(
            plugin=self.name, plugin_version="0.3", case_id=case.case_id,
            label="lesion" if found else "no_lesion",
            probabilities={"no_lesion": 0.1 if found else 0.9, "lesion": 0.9 if found else 0.1},
            explanation=Explanation(heatmap=coarse, heatmap_affine=coarse_affine),
            segmentation=Segmentation(mask, [Segment(1, "lesion")], affine=image.affine),
        )
"""

THRESHOLD_HU = 200.0
LESION_HU = 400.0


def install_threshold_seg(root: Path) -> Path:
    """pip-install the plugin as distribution ``acme-threshold-seg`` into ``root/site``."""
    return install_plugin_distribution(
        root,
        "acme-threshold-seg",
        "acme_threshold_seg",
        THRESHOLD_SEG_PLUGIN,
        {"threshold-seg": "acme_threshold_seg:ThresholdSegPlugin"},
        version="0.3",
    )


def write_threshold_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "threshold.json").write_text(json.dumps({"threshold_hu": THRESHOLD_HU}))
    return folder


def lesion_phantom(shape: tuple[int, int, int], centre: tuple[int, int, int], seed: int = 0):
    """Soft tissue (~40 HU) with one bright ellipsoid (400 HU), indexed (column, row, slice)."""
    rng = np.random.default_rng(seed)
    volume = 40 + rng.normal(0, 5, size=shape)
    i, j, k = np.indices(shape)
    inside = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + 4 * (k - centre[2]) ** 2 < 30
    volume[inside] = LESION_HU
    return volume.astype(np.float32)


def write_study(folder: Path, shape, centre, seed: int = 0, **geometry) -> Path:
    """One CT series of ``lesion_phantom`` (``geometry``: ``write_ct_series`` options)."""
    volume = lesion_phantom(shape, centre, seed)
    write_ct_series(folder, volume, frame_of_reference_uid=generate_uid(), **geometry)
    return folder
