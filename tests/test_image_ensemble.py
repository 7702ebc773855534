"""Image plugin seed ensembles and mixup: one model folder holding several members.

Real MONAI networks trained for a few epochs on tiny generated data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from image_support import SIZE, tiny_2d_config, write_spots_npz

from medplug.contract import Case, ImageVolume
from medplug.errors import DataError, ModelFileError
from medplug_image.config import ImageModelConfig
from medplug_image.ensemble import SeedEnsemble
from medplug_image.fit import fit_model_folder
from medplug_image.loop import Mixup
from medplug_image.plugin import ImageClassifierPlugin


def spot_config(**overrides) -> ImageModelConfig:
    return tiny_2d_config(**{"epochs": 3, "tta_flips": [1], **overrides})


@pytest.fixture(scope="module")
def spots_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "spots.npz"
    return write_spots_npz(path, {"train": 64, "val": 24, "test": 8})


@pytest.fixture(scope="module")
def ensemble_model(spots_npz: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("models") / "ensemble"
    return fit_model_folder(spots_npz, folder, spot_config(ensemble=3, mixup=0.4))


def test_members_train_from_their_own_seeds(ensemble_model) -> None:
    folder, result, metrics = ensemble_model
    assert isinstance(result.model, SeedEnsemble) and len(result.model.members) == 3
    assert len(result.best_epochs) == 3 and metrics["best_epochs"] == result.best_epochs
    assert {record["member"] for record in result.history} == {0, 1, 2}
    first, second = (m.state_dict()["conv1.weight"] for m in result.model.members[:2])
    assert not torch.equal(first, second)
    stored = json.loads((folder / "medplug.json").read_text())
    assert stored["image_config"]["ensemble"] == 3
    # one weights file, hash-checked (plus its ONNX export where onnxruntime is installed)
    assert set(stored["file_sha256"]) - {"model.onnx"} == {"model.safetensors"}


def test_ensemble_output_is_the_members_mean_logit(ensemble_model) -> None:
    model = ensemble_model[1].model
    images = torch.rand(4, 1, SIZE, SIZE)
    with torch.inference_mode():
        mean = torch.stack([member(images) for member in model.members]).mean(0)
        torch.testing.assert_close(model(images), mean)


def test_ensemble_folder_reloads_and_predicts_with_embeddings_and_gradcam(
    ensemble_model, spots_npz: Path
) -> None:
    folder, result, _ = ensemble_model
    plugin = ImageClassifierPlugin.from_pretrained(folder)
    images = np.load(spots_npz)["test_images"][:4]
    cases = [Case(f"c{i}", images=[ImageVolume(array=a)]) for i, a in enumerate(images)]
    batched = plugin.predict_batch(cases)
    batch = torch.stack([plugin._prepare(case).tensor.as_tensor() for case in cases])
    with torch.inference_mode():
        torch.testing.assert_close(result.model(batch), plugin.model(batch), rtol=0, atol=0)
    for case, prediction in zip(cases, batched, strict=True):
        assert prediction.error is None
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.embedding.shape == (3 * 32,)  # members' embeddings, concatenated
        heatmap = prediction.explanation.heatmap
        assert heatmap.shape == (SIZE, SIZE) and 0 <= heatmap.min() and heatmap.max() <= 1
        single = plugin.predict(case)
        assert single.probabilities == pytest.approx(prediction.probabilities, abs=1e-5)
    embeddings = plugin.embed_batch(cases)
    np.testing.assert_allclose(np.stack(embeddings), np.stack([p.embedding for p in batched]))


def test_tampered_ensemble_folder_is_refused(ensemble_model, tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(ensemble_model[0], folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match"):
        ImageClassifierPlugin.from_pretrained(folder)


def test_mixup_mixes_images_and_keeps_the_batch() -> None:
    images = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    mixed, partner, weight = Mixup(alpha=0.4, seed=0)(images)
    assert mixed.shape == images.shape and 0 <= weight <= 1
    torch.testing.assert_close(mixed, weight * images + (1 - weight) * images[partner])


def test_ensemble_size_below_one_is_refused() -> None:
    with pytest.raises(DataError, match="ensemble"):
        spot_config(ensemble=0)


def test_weight_average_is_what_training_keeps_and_validates(spots_npz: Path) -> None:
    from medplug_image.datasets import read_npz
    from medplug_image.loop import predict_logits, to_tensors, train_model

    config = spot_config(epochs=2, patience=2, weight_ema=0.9)
    train, val = (to_tensors(read_npz(spots_npz, s, config), config) for s in ("train", "val"))
    averaged = train_model(config, train, val)
    plain = train_model(spot_config(epochs=2, patience=2), train, val)
    kept = averaged.model.state_dict()
    # Same seed and data: only the averaging differs, so the kept weights do too ...
    assert not torch.equal(kept["conv1.weight"], plain.model.state_dict()["conv1.weight"])
    # ... and the kept network is the one whose val logits chose the epoch and calibrate.
    again = predict_logits(averaged.model, val[0], tta_flips=config.tta_flips)
    np.testing.assert_allclose(again, averaged.val_logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="weight_ema"):
        spot_config(weight_ema=1.0)
