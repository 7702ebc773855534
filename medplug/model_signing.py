"""Ed25519 signatures over ``medplug.json``, checked against keys the site trusts.

``medplug.json`` holds the SHA-256 of every weight file, so a signature over
its exact bytes covers the whole folder. ``medplug sign-model DIR --key
private.pem`` writes ``medplug.json.sig`` (the base64 signature). When
``MEDPLUG_TRUSTED_KEYS`` names a PEM public key file or a folder of them,
every model folder must carry a signature by one of those keys: an unsigned,
badly signed or edited folder is refused. Without it, signatures are not
required (but a present ``.sig`` that no trusted key can check is ignored).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from medplug.errors import ModelFileError

SIGNATURE_SUFFIX = ".sig"
TRUSTED_KEYS_ENV = "MEDPLUG_TRUSTED_KEYS"
CONFIG_NAME = "medplug.json"  # as medplug.model_folder; not imported to keep torch out


def signature_path(folder: Path) -> Path:
    return Path(folder) / (CONFIG_NAME + SIGNATURE_SUFFIX)


def trusted_keys_configured() -> bool:
    return bool(os.environ.get(TRUSTED_KEYS_ENV, "").strip())


def generate_key_pair(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair as PEM files (private key unencrypted, mode 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for path in (private_path, public_path):
        if Path(path).exists():
            raise ModelFileError(f"{path} already exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_bytes)
    Path(public_path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def sign_folder(folder: Path, private_key: Path, password: bytes | None = None) -> Path:
    """Verify ``folder`` as a loader would (all hashes present and matching), then sign
    its ``medplug.json`` and those of model folders nested in it; returns the top
    signature file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from medplug.model_folder import read_config

    folder = Path(folder)
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{private_key}: not a usable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelFileError(f"{private_key}: not an Ed25519 private key")
    # Nested model folders (fusion's sources/<modality>/) are loaded, and so checked,
    # on their own: each gets its own signature.
    nested = sorted(
        (path.parent for path in folder.rglob(CONFIG_NAME) if path.parent != folder),
        key=lambda path: len(path.parts),
        reverse=True,
    )
    for target_folder in [*nested, folder]:
        read_config(target_folder, check_signed=False, allow_unhashed=False)
    for target_folder in [*nested, folder]:
        signature = key.sign((target_folder / CONFIG_NAME).read_bytes())
        target = signature_path(target_folder)
        target.write_text(base64.b64encode(signature).decode("ascii") + "\n")
    return target


def load_trusted_keys(source: str | Path) -> list:  # list[Ed25519PublicKey]
    """Ed25519 public keys from a PEM file or every ``*.pem`` / ``*.pub`` in a folder."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix in (".pem", ".pub"))
    elif source.is_file():
        files = [source]
    else:
        raise ModelFileError(f"{TRUSTED_KEYS_ENV}={source}: no such file or folder")
    keys = []
    for path in files:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise ModelFileError(f"{path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ModelFileError(f"{path}: not an Ed25519 public key")
        keys.append(key)
    if not keys:
        raise ModelFileError(f"{TRUSTED_KEYS_ENV}={source}: holds no public keys")
    return keys


def check_signature(folder: Path, config_bytes: bytes) -> None:
    """Where keys are trusted, refuse ``folder`` unless ``config_bytes`` (its exact
    ``medplug.json``) is signed by one of them. A no-op otherwise."""
    source = os.environ.get(TRUSTED_KEYS_ENV, "").strip()
    if not source:
        return
    from cryptography.exceptions import InvalidSignature

    keys = load_trusted_keys(source)
    path = signature_path(folder)
    if not path.is_file():
        raise ModelFileError(
            f"{folder}: no {path.name}; this site only loads model folders signed by a "
            f"trusted key ({TRUSTED_KEYS_ENV}); sign it with `medplug sign-model`"
        )
    try:
        signature = base64.b64decode(path.read_text().strip(), validate=True)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a base64 signature") from exc
    for key in keys:
        try:
            key.verify(signature, config_bytes)
            return
        except InvalidSignature:
            continue
    raise ModelFileError(
        f"{folder}: {CONFIG_NAME} is not signed by a trusted key ({TRUSTED_KEYS_ENV}): "
        "it was changed after signing, or signed with a key this site does not trust"
    )
