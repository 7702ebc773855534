"""``hf-image``: a tiny ViT checkpoint (random init, trained a few steps on PneumoniaMNIST here).

Saved with ``save_pretrained`` (config, safetensors, image processor) and loaded
from the folder by the plugin; its probabilities must equal the checkpoint run
directly through transformers on the same pixels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medplug.contract import Case, ImageVolume, Prediction
from medplug.errors import ModelFileError
from medplug.ingest.nifti import save_nifti
from medplug.registry import load_plugin

PLUGIN = "hf-image"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not present (shared data)")
LABELS = {0: "normal", 1: "pneumonia"}


@pytest.fixture(scope="module")
def pneumonia() -> dict[str, np.ndarray]:
    with np.load(DATA) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def vit_folder(pneumonia: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=2, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )  # fmt: skip
    model = ViTForImageClassification(config)
    processor = ViTImageProcessor(
        do_resize=True, size={"height": 28, "width": 28}, image_mean=[0.5], image_std=[0.5]
    )
    images = torch.tensor(pneumonia["train_images"][:, None] / 255.0, dtype=torch.float32)
    pixels = (images - 0.5) / 0.5
    labels = torch.tensor(pneumonia["train_labels"][:, 0], dtype=torch.long)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):  # a few steps: the point is the folder, not the accuracy
        batch = torch.randint(0, len(pixels), (64,), generator=generator)
        loss = model(pixel_values=pixels[batch], labels=labels[batch]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit-pneumonia"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def xray_case(image: np.ndarray, case_id: str) -> Case:
    """A (rows, columns) X-ray as medplug holds it: indexed (column, row)."""
    return Case(case_id=case_id, images=[ImageVolume(array=image.T.astype(np.float32))])


@needs_data
def test_vit_folder_predicts_like_transformers_itself(vit_folder: Path, pneumonia: dict) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert (vit_folder / "model.safetensors").is_file()
    plugin = load_plugin(PLUGIN, vit_folder)
    assert plugin.info.labels == ["normal", "pneumonia"]
    assert plugin.info.inputs["image"].spatial_dims == 2
    model = AutoModelForImageClassification.from_pretrained(vit_folder).eval()
    processor = AutoImageProcessor.from_pretrained(vit_folder)
    images, truth = pneumonia["test_images"][:200], pneumonia["test_labels"][:200, 0]
    right = 0
    for i, image in enumerate(images):
        prediction = plugin.predict(xray_case(image, f"x{i}"))
        right += prediction.label == LABELS[int(truth[i])]
        if i < 5:
            inputs = processor(images=[image[..., None]], return_tensors="pt",
                               input_data_format="channels_last")  # fmt: skip
            with torch.no_grad():
                direct = torch.softmax(model(**inputs).logits, -1)[0].numpy()
            ours = [prediction.probabilities[name] for name in LABELS.values()]
            np.testing.assert_allclose(ours, direct, atol=1e-5)
            heatmap = prediction.explanation.heatmap
            assert heatmap.shape == (28, 28) and 0 <= heatmap.min() and heatmap.max() <= 1
            assert prediction.provenance["explanation"] == "attention rollout"
    print(f"\ntiny ViT after 80 steps: accuracy {right / len(images):.3f} on 200 test images")
    assert right / len(images) > 0.6


@needs_data
def test_predict_cli_on_a_nifti_radiograph(vit_folder: Path, pneumonia: dict, tmp_path: Path):
    image = pneumonia["test_images"][0]
    path = save_nifti(ImageVolume(array=image.T.astype(np.float32)), tmp_path / "xray.nii.gz")
    command = [sys.executable, "-m", "medplug.cli.main", "predict", str(path), "--plugin", PLUGIN,
               "--model", str(vit_folder), "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    payload.pop("ingest_s")
    printed = Prediction.from_json(payload)
    alone = load_plugin(PLUGIN, vit_folder).predict(xray_case(image, "x"))
    assert printed.label == alone.label
    assert printed.probabilities["pneumonia"] == pytest.approx(alone.probabilities["pneumonia"])


@needs_data
def test_pickle_only_checkpoint_is_refused(vit_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((vit_folder / name).read_bytes())
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match="pytorch_model.bin.*never unpickles"):
        load_plugin(PLUGIN, folder)


def test_cnn_checkpoint_gets_grad_cam(tmp_path: Path) -> None:
    """A convolutional architecture (ResNet) returns no attentions: Grad-CAM instead."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
        num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )  # fmt: skip
    folder = tmp_path / "tiny-resnet"
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5], image_std=[0.5]
    ).save_pretrained(folder)
    image = np.zeros((40, 24), dtype=np.float32)
    image[10:20, 5:12] = 200.0
    prediction = load_plugin(PLUGIN, folder).predict(xray_case(image, "cnn"))
    assert prediction.provenance["explanation"].startswith("grad-cam on ")
    assert prediction.explanation.heatmap.shape == (24, 40)  # (column, row), like the input
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
