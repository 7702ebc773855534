"""A site that requires signed model folders loads no bundle or TorchScript folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from medplug.errors import ModelFileError
from medplug.registry import load_plugin


@pytest.mark.parametrize("plugin", ["monai-bundle", "torchscript"])
def test_unsigned_code_is_refused_under_trusted_keys(
    plugin: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MEDPLUG_TRUSTED_KEYS", str(tmp_path / "keys"))
    with pytest.raises(
        ModelFileError, match=r"MEDPLUG_TRUSTED_KEYS.*(no medplug signature|signature covers)"
    ):
        load_plugin(plugin, tmp_path)
