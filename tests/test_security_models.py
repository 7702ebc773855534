"""Model folders an attacker has edited: unhashed, tampered, junk, unsigned, mis-signed.

Real safetensors files, real Ed25519 keys (``cryptography``) and the real CLI
(``medplug keygen`` / ``sign-model`` / ``verify-model``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medplug.errors import ModelFileError
from medplug.model_folder import (
    ALLOW_UNHASHED_ENV,
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_model_folder,
    save_model_folder,
    sha256_file,
)
from medplug.model_signing import TRUSTED_KEYS_ENV, generate_key_pair, sign_folder

WEIGHTS = {"layer.weight": torch.arange(6, dtype=torch.float32).reshape(3, 2)}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_UNHASHED_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return save_model_folder(tmp_path / "model", WEIGHTS, {"plugin": "x", "temperature": 1.5})


def edit_config(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config, indent=2) + "\n")


def rehash(folder: Path) -> None:
    """What an attacker who can write the folder does after swapping weights."""
    edit_config(
        folder, lambda c: c.update(file_sha256={WEIGHTS_NAME: sha256_file(folder / WEIGHTS_NAME)})
    )


def medplug_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
        timeout=120,
    )


# ----------------------------------------------------------------- hashes


def test_deleting_the_hash_list_does_not_turn_checking_off(folder: Path) -> None:
    save_file({"layer.weight": torch.full((3, 2), 99.0)}, str(folder / WEIGHTS_NAME))
    edit_config(folder, lambda c: c.pop("file_sha256"))
    with pytest.raises(ModelFileError, match=rf"{WEIGHTS_NAME}: weight file has no SHA-256"):
        load_model_folder(folder)
    edit_config(folder, lambda c: c.update(file_sha256={}))
    with pytest.raises(ModelFileError, match="no SHA-256"):
        load_model_folder(folder)


def test_an_extra_unhashed_weight_file_is_refused_by_name(folder: Path) -> None:
    (folder / "sub").mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "sub" / "adapter.safetensors"))
    with pytest.raises(ModelFileError, match=r"sub/adapter.safetensors: weight file has no"):
        load_model_folder(folder)
    (folder / "sub" / "adapter.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match="pytorch_model.bin: weight file has no"):
        load_model_folder(folder)


def test_opt_out_loads_unhashed_weights_with_a_warning_each_time(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    edit_config(folder, lambda c: c.pop("file_sha256"))
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="medplug.models"):
        load_model_folder(folder)
        state, _ = load_model_folder(folder)
    torch.testing.assert_close(state["layer.weight"], WEIGHTS["layer.weight"])
    warnings = [r.getMessage() for r in caplog.records if ALLOW_UNHASHED_ENV in r.getMessage()]
    assert len(warnings) == 2 and WEIGHTS_NAME in warnings[0]
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, "yes")  # only "1" opts out
    with pytest.raises(ModelFileError):
        load_model_folder(folder)


def test_tampered_weights_are_refused(folder: Path) -> None:
    save_file({"layer.weight": torch.full((3, 2), 99.0)}, str(folder / WEIGHTS_NAME))
    with pytest.raises(ModelFileError, match="does not match.*refusing to load"):
        load_model_folder(folder)


def test_junk_weights_are_a_model_file_error_naming_the_file(folder: Path) -> None:
    (folder / WEIGHTS_NAME).write_bytes(b"\xff" * 64)
    rehash(folder)
    with pytest.raises(ModelFileError, match=rf"{WEIGHTS_NAME}: not a readable safetensors"):
        load_model_folder(folder)
    (folder / WEIGHTS_NAME).write_bytes(b"")
    rehash(folder)
    with pytest.raises(ModelFileError, match=WEIGHTS_NAME):
        load_model_folder(folder)


def test_hash_entries_cannot_point_outside_the_folder(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("x")
    digest = sha256_file(tmp_path / "outside.txt")
    edit_config(folder, lambda c: c["file_sha256"].update({"../outside.txt": digest}))
    with pytest.raises(ModelFileError, match="outside the folder"):
        load_model_folder(folder)


def test_config_that_is_not_an_object_is_refused(folder: Path) -> None:
    (folder / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a JSON object"):
        load_model_folder(folder)
    (folder / CONFIG_NAME).write_text('{"file_sha256": ["model.safetensors"]}')
    with pytest.raises(ModelFileError, match="file_sha256 must map"):
        load_model_folder(folder)


# ----------------------------------------------------------------- signatures


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("site", "other"):
        generate_key_pair(tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem")
        made[name] = tmp_path / f"{name}.pem"
        made[f"{name}.pub"] = tmp_path / f"{name}.pub.pem"
    return made


def test_signed_folder_loads_with_a_trusted_key_and_edits_are_refused(
    folder: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sign_folder(folder, keys["site"])
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(keys["site.pub"]))
    load_model_folder(folder)
    # A folder of trusted keys works too.
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(keys["other.pub"], trusted / "a.pem")
    shutil.copy(keys["site.pub"], trusted / "b.pem")
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(trusted))
    load_model_folder(folder)

    # Weights swapped and medplug.json re-hashed: the hash check passes, the signature not.
    save_file({"layer.weight": torch.full((3, 2), 99.0)}, str(folder / WEIGHTS_NAME))
    rehash(folder)
    with pytest.raises(ModelFileError, match="not signed by a trusted key"):
        load_model_folder(folder)


def test_unsigned_and_untrusted_signatures_are_refused_when_keys_are_trusted(
    folder: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(keys["site.pub"]))
    with pytest.raises(ModelFileError, match=r"no medplug.json.sig.*sign-model"):
        load_model_folder(folder)
    sign_folder(folder, keys["other"])
    with pytest.raises(ModelFileError, match="not signed by a trusted key"):
        load_model_folder(folder)
    (folder / "medplug.json.sig").write_text("not base64!\n")
    with pytest.raises(ModelFileError, match="not a base64 signature"):
        load_model_folder(folder)
    # The opt-out for unhashed weights does not lift the signature requirement.
    monkeypatch.setenv(ALLOW_UNHASHED_ENV, "1")
    (folder / "medplug.json.sig").unlink()
    with pytest.raises(ModelFileError, match="no medplug.json.sig"):
        load_model_folder(folder)


def test_trusted_keys_setting_fails_closed(
    folder: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sign_folder(folder, keys["site"])
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(ModelFileError, match="no such file"):
        load_model_folder(folder)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "empty"))
    with pytest.raises(ModelFileError, match="holds no public keys"):
        load_model_folder(folder)
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(keys["site"]))  # a private key is not a public key
    with pytest.raises(ModelFileError, match="not a PEM public key"):
        load_model_folder(folder)


def test_signing_refuses_a_folder_that_would_not_load(folder: Path, keys: dict[str, Path]) -> None:
    edit_config(folder, lambda c: c.pop("file_sha256"))
    with pytest.raises(ModelFileError, match="no SHA-256"):
        sign_folder(folder, keys["site"])
    assert not (folder / "medplug.json.sig").exists()


def test_cli_keygen_sign_and_verify(folder: Path, tmp_path: Path) -> None:
    made = medplug_cli(
        "keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0
    again = medplug_cli(
        "keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "x")
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    signed = medplug_cli("sign-model", str(folder), "--key", str(tmp_path / "k.pem"))
    assert signed.returncode == 0, signed.stderr
    trusted = {TRUSTED_KEYS_ENV: str(tmp_path / "k.pub")}
    verified = medplug_cli("verify-model", str(folder), env=trusted)
    assert verified.returncode == 0 and "signature checked" in verified.stdout
    edit_config(folder, lambda c: c.update(temperature=0.01))
    refused = medplug_cli("verify-model", str(folder), env=trusted)
    assert refused.returncode == 2 and "not signed by a trusted key" in refused.stderr


def test_nested_model_folder_is_covered_by_its_hashed_medplug_json(tmp_path: Path) -> None:
    """Fusion keeps its embedding models as ``sources/<modality>/`` model folders."""
    from medplug.model_folder import write_config

    outer = tmp_path / "fusion"
    save_model_folder(outer / "sources" / "image", WEIGHTS, {"plugin": "image"})
    save_model_folder(outer, WEIGHTS, {"plugin": "placeholder"})
    write_config(outer, {"plugin": "fusion"}, [WEIGHTS_NAME, f"sources/image/{CONFIG_NAME}"])
    load_model_folder(outer)
    # A tampered nested source refuses the outer folder at once (fusion loads sources lazily).
    inner = outer / "sources" / "image" / WEIGHTS_NAME
    original = inner.read_bytes()
    save_file({"layer.weight": torch.full((3, 2), 99.0)}, str(inner))
    with pytest.raises(ModelFileError, match="sources/image/model.safetensors: SHA-256"):
        load_model_folder(outer)
    inner.write_bytes(original)
    write_config(outer, {"plugin": "fusion"}, [WEIGHTS_NAME])
    with pytest.raises(ModelFileError, match="sources/image/model.safetensors: weight file"):
        load_model_folder(outer)
