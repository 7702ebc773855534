"""The built-in image and report plugins load only verified (and, where required,
signed) model folders, through the same ``load_plugin`` path batch and serve use.

Folders are written by the plugins' own writers (``save_model_folder``,
``save_report_model`` = HF ``save_pretrained`` + ``medplug.json``) around small
untrained networks, so the test needs no training run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from image_support import tiny_2d_config

from medplug.errors import ModelFileError
from medplug.model_folder import ALLOW_UNHASHED_ENV, CONFIG_NAME, save_model_folder, sha256_file
from medplug.model_signing import TRUSTED_KEYS_ENV, generate_key_pair, sign_folder
from medplug.registry import load_plugin

LABELS = ["no_lesion", "lesion"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_UNHASHED_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    from medplug_image import PLUGIN_NAME, PLUGIN_VERSION
    from medplug_image.calibrate import Calibration
    from medplug_image.networks import build_network
    from medplug_image.plugin import ImageClassifierPlugin

    config = tiny_2d_config()
    stored = {
        "plugin": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "info": ImageClassifierPlugin.info_for(config, {}).to_dict(),
        "image_config": config.to_dict(),
        "calibration": Calibration().to_dict(),
    }
    return save_model_folder(tmp_path / "image", build_network(config).state_dict(), stored)


@pytest.fixture
def report_folder(tmp_path: Path) -> Path:
    from medplug_text.model_io import save_report_model
    from medplug_text.modeling import CompactBertSize, compact_config, new_classifier
    from medplug_text.tokenization import train_wordpiece

    texts = ["small left pleural effusion", "no acute findings", "lungs are clear"] * 4
    tokenizer = train_wordpiece(texts, vocab_size=120, min_frequency=1)
    size = CompactBertSize(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )  # fmt: skip
    model = new_classifier(compact_config(len(tokenizer), tokenizer.pad_token_id, size), LABELS)
    window = {"max_length": 64, "stride": 32}
    return save_report_model(
        tmp_path / "report",
        model,
        tokenizer,
        {"labels": LABELS, "temperature": 1.0, "window": window},
    )


def drop_hash(folder: Path, name: str) -> None:
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    del config["file_sha256"][name]
    path.write_text(json.dumps(config, indent=2))


@pytest.mark.parametrize("plugin,fixture", [("image-classifier", "image_folder"),
                                            ("report-classifier", "report_folder")])  # fmt: skip
def test_builtin_plugin_loads_a_signed_folder_and_refuses_edits(
    plugin: str,
    fixture: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    folder: Path = request.getfixturevalue(fixture)
    generate_key_pair(tmp_path / "site.pem", tmp_path / "site.pub")
    generate_key_pair(tmp_path / "other.pem", tmp_path / "other.pub")
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "site.pub"))
    with pytest.raises(ModelFileError, match="medplug.json.sig"):
        load_plugin(plugin, folder)
    sign_folder(folder, tmp_path / "other.pem")
    with pytest.raises(ModelFileError, match="not signed by a trusted key"):
        load_plugin(plugin, folder)
    sign_folder(folder, tmp_path / "site.pem")
    assert load_plugin(plugin, folder).name == plugin
    monkeypatch.delenv(TRUSTED_KEYS_ENV)

    drop_hash(folder, "model.safetensors")  # without keys, the hashes are the protection
    with pytest.raises(ModelFileError, match="model.safetensors: weight file has no SHA-256"):
        load_plugin(plugin, folder)


def test_report_folder_hashes_every_hf_file(report_folder: Path) -> None:
    hashed = set(json.loads((report_folder / CONFIG_NAME).read_text())["file_sha256"])
    assert {"model.safetensors", "config.json"} <= hashed
    on_disk = {p.name for p in report_folder.iterdir()} - {CONFIG_NAME}
    assert on_disk == hashed


def test_report_folder_without_medplug_json_needs_the_opt_out(
    report_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting medplug.json would make it a plain HF checkpoint: unverifiable."""
    (report_folder / CONFIG_NAME).unlink()
    with pytest.raises(ModelFileError, match="cannot be verified"):
        load_plugin("report-classifier", report_folder)
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="medplug.models"):
        assert load_plugin("report-classifier", report_folder).labels == LABELS
    assert any("unverified" in record.getMessage() for record in caplog.records)
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(report_folder / "any.pub"))
    with pytest.raises(ModelFileError, match="signed by a trusted key"):
        load_plugin("report-classifier", report_folder)


@pytest.mark.parametrize("fixture", ["image_folder", "report_folder"])
def test_junk_weights_are_a_model_file_error(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * 8 + b"{junk")
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    config["file_sha256"]["model.safetensors"] = sha256_file(weights)  # attacker re-hashed
    path.write_text(json.dumps(config))
    plugin = "image-classifier" if fixture == "image_folder" else "report-classifier"
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_plugin(plugin, folder)


def test_report_folder_refuses_an_added_tokenizer_file(report_folder: Path) -> None:
    """transformers would read an added special_tokens_map.json; it must be hashed too."""
    assert load_plugin("report-classifier", report_folder).labels == LABELS
    (report_folder / "special_tokens_map.json").write_text('{"unk_token": "effusion"}')
    with pytest.raises(ModelFileError, match="special_tokens_map.json: file has no SHA-256"):
        load_plugin("report-classifier", report_folder)
