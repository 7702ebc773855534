"""ONNX Runtime backend of the image plugin: export checked against torch, the same
predictions, model.onnx under hash verification and signing, torch kept for Grad-CAM
and for installs without onnxruntime. Real torch, real onnxruntime, a tiny 3D ResNet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medplug.contract import Case, ImageVolume
from medplug.errors import InputError, ModelFileError
from medplug.model_signing import generate_key_pair, sign_folder
from medplug_image import PLUGIN_NAME, PLUGIN_VERSION
from medplug_image.calibrate import Calibration
from medplug_image.config import ImageModelConfig
from medplug_image.fit import save_image_model
from medplug_image.networks import build_network
from medplug_image.onnx_backend import (
    BACKEND_ENV,
    ONNX_NAME,
    OrtForward,
    add_onnx_to_folder,
    check_equivalence,
)
from medplug_image.plugin import ImageClassifierPlugin

pytest.importorskip("onnxruntime")  # in the [test] extra; the no-ORT path is tested below

SIZE = 16


def tiny_3d_config(**overrides) -> ImageModelConfig:
    settings = dict(
        labels=["clear", "spot"],
        spatial_dims=3,
        network_kwargs={
            "block": "basic",
            "layers": [1, 1, 1, 1],
            "block_inplanes": [4, 8, 8, 16],
            "conv1_t_size": 3,
            "no_max_pool": True,
        },
        spatial_size=[SIZE, SIZE, SIZE],
        orientation=None,
        intensity_window=[0, 255],
    )
    settings.update(overrides)
    return ImageModelConfig(**settings)


def save_tiny(folder: Path, config: ImageModelConfig, seed: int = 0) -> Path:
    """A randomly initialised network saved as the trainer saves a trained one."""
    torch.manual_seed(seed)
    model = build_network(config).eval()
    stored = {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "info": ImageClassifierPlugin.info_for(config).to_dict(),
        "image_config": config.to_dict(),
        "calibration": Calibration(temperature=1.5, threshold=0.5).to_dict(),
    }
    folder.mkdir(parents=True)
    return save_image_model(folder, model, config, stored)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("onnx") / "tiny3d", tiny_3d_config())


def cases(n: int, seed: int = 1) -> list[Case]:
    rng = np.random.default_rng(seed)
    volumes = rng.integers(0, 255, size=(n, 20, 18, 14)).astype(np.float32)
    return [Case(f"c{i}", images=[ImageVolume(array=v)]) for i, v in enumerate(volumes)]


@pytest.fixture(autouse=True)
def auto_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def test_saved_folder_holds_a_hashed_onnx_that_matches_torch(folder: Path) -> None:
    stored = json.loads((folder / "medplug.json").read_text())
    assert set(stored["file_sha256"]) == {"model.safetensors", ONNX_NAME}
    plugin = ImageClassifierPlugin.from_pretrained(folder)
    difference = check_equivalence(plugin.model, (folder / ONNX_NAME).read_bytes(), plugin.config)
    assert difference <= 1e-4
    # dynamic batch axis: 1, 2 and 5 cases through one session, same logits as torch
    session = OrtForward((folder / ONNX_NAME).read_bytes(), threads=1)
    for batch in (1, 2, 5):
        images = torch.rand(batch, 1, SIZE, SIZE, SIZE)
        logits, embedding = session(images.numpy())
        with torch.inference_mode():
            np.testing.assert_allclose(logits, plugin.model(images).numpy(), atol=1e-4)
        assert embedding.shape == (batch, 16)


def test_predictions_without_explanation_use_ort_and_match_torch(folder: Path) -> None:
    batch = cases(3)
    quick = ImageClassifierPlugin.from_pretrained(folder, explain=False)
    quick.backend = "onnx"  # ORT for the batch of 3 too (auto: single cases only)
    explained = ImageClassifierPlugin.from_pretrained(folder)
    fast = quick.predict_batch(batch)
    slow = explained.predict_batch(batch)
    for ort_prediction, torch_prediction in zip(fast, slow, strict=True):
        assert ort_prediction.provenance["backend"] == "onnxruntime"
        assert torch_prediction.provenance["backend"] == "torch"  # Grad-CAM needs torch
        assert ort_prediction.explanation is None
        assert torch_prediction.explanation.heatmap.shape == (20, 18, 14)
        assert ort_prediction.label == torch_prediction.label
        assert ort_prediction.probabilities == pytest.approx(
            torch_prediction.probabilities, abs=1e-5
        )
        np.testing.assert_allclose(ort_prediction.embedding, torch_prediction.embedding, atol=1e-4)
    # auto sends single cases to ORT and batches to torch, where ORT measured no gain
    auto = ImageClassifierPlugin.from_pretrained(folder, explain=False)
    assert auto.backend == "auto" and auto.uses_onnx(1) and not auto.uses_onnx(2)
    assert auto.predict(batch[0]).provenance["backend"] == "onnxruntime"
    assert auto.predict_batch(batch)[0].provenance["backend"] == "torch"


def test_backend_setting(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    plugin = ImageClassifierPlugin.from_pretrained(folder, explain=False)
    assert plugin.predict(cases(1)[0]).provenance["backend"] == "torch"
    monkeypatch.setenv(BACKEND_ENV, "onnx")
    plugin = ImageClassifierPlugin.from_pretrained(folder, explain=False)
    assert plugin.uses_onnx(16)  # asked for explicitly: every batch size
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(InputError, match="MEDPLUG_BACKEND='tensorrt'"):
        ImageClassifierPlugin.from_pretrained(folder)


def test_tampered_onnx_is_refused(folder: Path, tmp_path: Path) -> None:
    # model.onnx swapped for another network's valid export: hash mismatch at load
    other = save_tiny(tmp_path / "other", tiny_3d_config(), seed=7)
    tampered = shutil.copytree(folder, tmp_path / "tampered")
    shutil.copy(other / ONNX_NAME, tampered / ONNX_NAME)
    with pytest.raises(ModelFileError, match="model.onnx: SHA-256"):
        ImageClassifierPlugin.from_pretrained(tampered, explain=False)
    # its hash removed from medplug.json as well: an unhashed weight file is refused
    stored = json.loads((tampered / "medplug.json").read_text())
    del stored["file_sha256"][ONNX_NAME]
    (tampered / "medplug.json").write_text(json.dumps(stored))
    with pytest.raises(ModelFileError, match="model.onnx: weight file has no SHA-256"):
        ImageClassifierPlugin.from_pretrained(tampered, explain=False)
    # swapped after loading, before the first ORT session: the bytes run are re-hashed
    swapped = shutil.copytree(folder, tmp_path / "swapped")
    plugin = ImageClassifierPlugin.from_pretrained(swapped, explain=False)
    shutil.copy(other / ONNX_NAME, swapped / ONNX_NAME)
    with pytest.raises(ModelFileError, match="model.onnx: SHA-256"):
        plugin._forward(torch.rand(1, 1, SIZE, SIZE, SIZE))


def test_signed_folder_covers_the_onnx_file(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = shutil.copytree(folder, tmp_path / "signed")
    generate_key_pair(tmp_path / "key.pem", tmp_path / "key.pub")
    sign_folder(signed, tmp_path / "key.pem")
    monkeypatch.setenv("MEDPLUG_TRUSTED_KEYS", str(tmp_path / "key.pub"))
    assert ImageClassifierPlugin.from_pretrained(signed, explain=False).predict(cases(1)[0]).label
    (signed / ONNX_NAME).write_bytes((signed / ONNX_NAME).read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="model.onnx"):
        ImageClassifierPlugin.from_pretrained(signed, explain=False)


def test_add_onnx_to_an_older_folder(folder: Path, tmp_path: Path) -> None:
    older = shutil.copytree(folder, tmp_path / "older")
    (older / ONNX_NAME).unlink()
    stored = json.loads((older / "medplug.json").read_text())
    del stored["file_sha256"][ONNX_NAME]
    (older / "medplug.json").write_text(json.dumps(stored))
    assert not ImageClassifierPlugin.from_pretrained(older, explain=False).uses_onnx(1)
    add_onnx_to_folder(older)
    assert ImageClassifierPlugin.from_pretrained(older, explain=False).uses_onnx(1)


NO_ORT = r"""
import sys
sys.modules["onnxruntime"] = None  # as if onnxruntime were not installed
import json, os
from pathlib import Path
import numpy as np
from medplug.contract import Case, ImageVolume
from medplug.errors import InputError, ModelFileError
from medplug_image.plugin import ImageClassifierPlugin
folder = Path(sys.argv[1])
case = Case("c", images=[ImageVolume(array=np.full((20, 18, 14), 90, np.float32))])
plugin = ImageClassifierPlugin.from_pretrained(folder, explain=False)
out = {"backend": plugin.predict(case).provenance["backend"]}
os.environ["MEDPLUG_BACKEND"] = "onnx"
try:
    ImageClassifierPlugin.from_pretrained(folder, explain=False)
except ModelFileError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_without_onnxruntime_torch_serves_and_asking_for_ort_says_how(folder: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(BACKEND_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", NO_ORT, str(folder)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "torch"
    assert "needs onnxruntime" in out["error"] and "medplug[onnx]" in out["error"]


def test_cli_predict_no_explain_uses_ort(folder: Path, tmp_path: Path) -> None:
    nifti = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(cases(1)[0].image.array, np.eye(4)), nifti)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(BACKEND_ENV, None)
    base = [sys.executable, "-m", "medplug.cli.main", "predict", str(nifti)]
    base += ["--plugin", "image-classifier", "--model", str(folder), "--json"]
    answers = []
    for extra in (["--no-explain"], []):
        done = subprocess.run(
            base + extra, capture_output=True, text=True, env=env, timeout=120, check=True
        )
        answers.append(json.loads(done.stdout))
    quick, explained = answers
    assert quick["provenance"]["backend"] == "onnxruntime" and quick["explanation"] is None
    assert explained["provenance"]["backend"] == "torch" and explained["explanation"]
    for label, p in quick["probabilities"].items():
        assert p == pytest.approx(explained["probabilities"][label], abs=1e-5)


def test_serve_explain_false_uses_ort_and_explained_requests_keep_torch(
    folder: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from medplug.serve import ServeSettings, create_app

    models = tmp_path / "models"
    shutil.copytree(folder, models / "image-classifier")
    nifti = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(cases(1)[0].image.array, np.eye(4)), nifti)
    token = "t" * 32
    client = TestClient(create_app(ServeSettings(token=token, models_dir=models)))
    answers = {}
    for explain in ("false", "true", "false"):
        response = client.post(
            f"/predict/image-classifier?explain={explain}",
            headers={"Authorization": f"Bearer {token}"},
            files={"files": ("case.nii.gz", nifti.read_bytes())},
        )
        assert response.status_code == 200, response.text
        answers[explain] = response.json()
    assert answers["false"]["provenance"]["backend"] == "onnxruntime"
    assert answers["false"]["explanation"] is None
    assert answers["true"]["provenance"]["backend"] == "torch"
    assert answers["true"]["explanation"] is not None
    response = client.post(
        "/predict/image-classifier?explain=false&output=heatmap",
        headers={"Authorization": f"Bearer {token}"},
        files={"files": ("case.nii.gz", nifti.read_bytes())},
    )
    assert response.status_code == 400 and "explain=true" in response.text
