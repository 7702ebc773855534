"""Model folders: round trip, tamper detection, no pickles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medplug.errors import ModelFileError
from medplug.model_folder import WEIGHTS_NAME, load_model_folder, save_model_folder


def test_round_trip_and_tamper_refusal(tmp_path: Path) -> None:
    weights = {"layer.weight": torch.randn(3, 2)}
    save_model_folder(tmp_path, weights, {"plugin": "x", "temperature": 1.5})
    loaded, config = load_model_folder(tmp_path, expected_plugin="x")
    torch.testing.assert_close(loaded["layer.weight"], weights["layer.weight"])
    assert config["temperature"] == 1.5

    with pytest.raises(ModelFileError, match="written by plugin 'x', not 'y'"):
        load_model_folder(tmp_path, expected_plugin="y")

    data = bytearray((tmp_path / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match.*refusing to load"):
        load_model_folder(tmp_path)


def test_pickle_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    (tmp_path / "medplug.json").write_text('{"plugin": "x"}')
    with pytest.raises(ModelFileError, match="model.pt: weight file has no SHA-256"):
        load_model_folder(tmp_path)
    monkeypatch.setenv("MEDPLUG_ALLOW_UNHASHED_MODELS", "1")  # still never unpickled
    with pytest.raises(ModelFileError, match="pickle files.*model.pt"):
        load_model_folder(tmp_path)


def test_config_keeps_mapping_order(tmp_path: Path) -> None:
    """Plugins rebuild networks from mappings in saved order (fusion's modality order)."""
    save_model_folder(tmp_path, {"w": torch.zeros(1)}, {"dims": {"image": 8, "clinical": 3}})
    _, config = load_model_folder(tmp_path)
    assert list(config["dims"]) == ["image", "clinical"]
