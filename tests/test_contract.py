"""The predict contract: JSON round trip, input checks, default batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medplug.contract import (
    LESION,
    Case,
    Explanation,
    ImageVolume,
    InputSpec,
    Plugin,
    PluginInfo,
    Prediction,
    Segment,
    Segmentation,
)
from medplug.errors import InputError, MissingInputError, PluginError


class MeanIntensityPlugin(Plugin):
    """A real (if simple) plugin: thresholds the mean of a 2D image."""

    name = "mean-intensity"

    def __init__(self) -> None:
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name,
            version="1.0",
            task="classification",
            labels=["dark", "bright"],
            inputs={
                "image": InputSpec(kind="image", spatial_dims=2),
                "report": InputSpec(kind="text", required=False),
            },
        )

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> MeanIntensityPlugin:
        return cls()

    def _predict(self, case: Case) -> Prediction:
        image = case.image
        assert image is not None
        p_bright = float(1 / (1 + np.exp(-(image.array.mean() - 0.5) * 10)))
        return Prediction(
            plugin=self.name,
            plugin_version=self.info.version,
            case_id=case.case_id,
            label="bright" if p_bright >= 0.5 else "dark",
            probabilities={"dark": 1 - p_bright, "bright": p_bright},
        )


def test_prediction_json_round_trip_keeps_arrays_and_attributions() -> None:
    heatmap = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    prediction = Prediction(
        plugin="p",
        plugin_version="1",
        case_id="c1",
        label="yes",
        probabilities={"no": 0.25, "yes": 0.75},
        embedding=np.arange(3, dtype=np.float32),
        explanation=Explanation(
            heatmap=heatmap,
            heatmap_affine=np.eye(4),
            token_attributions=[("effusion", 0.9), ("no", -0.2)],
        ),
        warnings=["report missing"],
        provenance={"model_sha256": "abc"},
    )
    text = json.dumps(prediction.to_json())
    restored = Prediction.from_json(json.loads(text))
    assert restored.probabilities == prediction.probabilities
    assert restored.explanation is not None
    np.testing.assert_array_equal(restored.explanation.heatmap, heatmap)
    assert restored.explanation.heatmap.dtype == np.float32
    np.testing.assert_array_equal(restored.embedding, prediction.embedding)
    assert restored.explanation.token_attributions == [("effusion", 0.9), ("no", -0.2)]
    assert restored.warnings == ["report missing"]


def test_missing_required_input_names_the_case_and_the_input() -> None:
    plugin = MeanIntensityPlugin()
    with pytest.raises(MissingInputError, match=r"case 'c7'.*needs input 'image'"):
        plugin.predict(Case(case_id="c7", report="no image here"))


def test_wrong_dimensionality_is_a_clear_input_error() -> None:
    plugin = MeanIntensityPlugin()
    case = Case("c3", images=[ImageVolume(np.zeros((4, 4, 4)), source="/data/x.nii.gz")])
    with pytest.raises(InputError, match=r"expects a 2D image.*\(4, 4, 4\).*x.nii.gz"):
        plugin.predict(case)


def test_nan_image_is_refused() -> None:
    array = np.zeros((4, 4))
    array[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        MeanIntensityPlugin().predict(Case("c4", images=[ImageVolume(array)]))


def test_single_slice_volume_counts_as_2d_and_batch_loops() -> None:
    plugin = MeanIntensityPlugin()
    cases = [
        Case("dark", images=[ImageVolume(np.zeros((4, 4, 1)))]),
        Case("bright", images=[ImageVolume(np.ones((4, 4)))]),
    ]
    predictions = plugin.predict_batch(cases)
    assert [p.label for p in predictions] == ["dark", "bright"]
    assert all(p.elapsed_s > 0 for p in predictions)


def test_spacing_is_read_from_the_affine() -> None:
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    assert ImageVolume(np.zeros((2, 2, 2)), affine=affine).spacing == pytest.approx((0.7, 0.7, 2.5))


def test_plugin_info_maps_to_monai_bundle_metadata() -> None:
    info = MeanIntensityPlugin.describe()
    bundle = info.to_bundle_metadata()
    assert bundle["network_data_format"]["inputs"]["image"]["type"] == "image"
    assert bundle["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        0: "dark",
        1: "bright",
    }
    assert PluginInfo.from_dict(info.to_dict()) == info
    assert info.required_inputs == ["image"] and info.optional_inputs == ["report"]


def test_predict_batch_isolates_a_bad_case() -> None:
    plugin = MeanIntensityPlugin()
    cases = [
        Case("fine", images=[ImageVolume(np.ones((4, 4)))]),
        Case("no-image", report="text only"),
    ]
    good, bad = plugin.predict_batch(cases)
    assert good.label == "bright" and not good.failed
    assert bad.failed and bad.label is None and bad.case_id == "no-image"
    assert bad.error is not None and bad.error["type"] == "MissingInputError"
    assert Prediction.from_json(bad.to_json()).error == bad.error


class ThresholdSegmenter(MeanIntensityPlugin):
    """Returns a mask of the bright pixels; ``shape_bug`` makes it return the wrong shape."""

    name = "threshold-seg"
    shape_bug = False

    def _predict(self, case: Case) -> Prediction:
        prediction = super()._predict(case)
        image = case.image
        assert image is not None
        mask = (image.array > 0.5).astype(np.uint8)
        if self.shape_bug:
            mask = mask[:-1]
        prediction.segmentation = Segmentation(
            label_map=mask, segments=[Segment(value=1, label="bright")]
        )
        return prediction


def test_segmentation_round_trips_and_measures_its_volume() -> None:
    array = np.zeros((8, 6), dtype=np.float32)
    array[2:4, 1:4] = 1.0
    image = ImageVolume(array=array, affine=np.diag([0.5, 2.0, 1.0, 1.0]))
    prediction = ThresholdSegmenter().predict(Case(case_id="c1", images=[image]))
    restored = Prediction.from_json(json.loads(json.dumps(prediction.to_json())))
    assert restored.segmentation is not None
    assert np.array_equal(restored.segmentation.label_map, prediction.segmentation.label_map)
    assert restored.segmentation.segments == [Segment(value=1, label="bright")]
    assert restored.segmentation.segments[0].type == LESION
    # 6 voxels of 0.5 x 2.0 x 1.0 mm = 6 mm^3 = 0.006 mL
    volume = restored.segmentation.volume_ml(restored.segmentation.segments[0], image.spacing)
    assert volume == pytest.approx(0.006)


def test_segmentation_of_the_wrong_shape_is_an_error_record_not_an_object() -> None:
    plugin = ThresholdSegmenter()
    plugin.shape_bug = True
    good = Case(case_id="ok", images=[ImageVolume(array=np.ones((4, 4), dtype=np.float32))])
    [prediction] = plugin.predict_batch([good])
    assert prediction.failed and prediction.segmentation is None
    assert "segmentation has shape (3, 4)" in prediction.error["message"]


def test_segmentation_with_undeclared_labels_is_refused() -> None:
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    segmentation = Segmentation(label_map=mask, segments=[Segment(value=1, label="a")])
    with pytest.raises(PluginError, match=r"label values \[2\]"):
        segmentation.check_geometry(ImageVolume(array=np.zeros((2, 2), dtype=np.float32)))
