"""Install OHIF's prebuilt viewer from the npm registry into a cache folder, verified.

``npm pack`` fetches the package tarball (npm checks it against the registry's
integrity); we then check the tarball's SHA-512 against the integrity pinned
here, so a changed registry entry cannot slip in a different build, and unpack
only ``package/dist`` (tarfile's ``data`` filter: no links out, no absolute
paths) into ``<cache>/<version>/dist``. A marker file written last makes a
half-finished install look absent, so a rerun redoes it; a finished one is
reused at once.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from medplug.errors import MedplugError

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# `npm view @ohif/app@3.13.2 dist.integrity`
OHIF_INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="  # noqa: E501
MARKER = "medplug-ohif.json"


class OhifInstallError(MedplugError):
    """OHIF could not be fetched or did not match its pinned integrity."""


def sri_sha512(path: Path) -> str:
    """The Subresource Integrity string (``sha512-<base64>``) of a file, as npm writes it."""
    digest = hashlib.sha512()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def installed_dist(cache: Path, version: str = OHIF_VERSION) -> Path | None:
    """The ``dist`` folder of a finished install of ``version`` under ``cache``, else None."""
    folder = cache / version
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    dist = folder / "dist"
    if marker.get("integrity") != OHIF_INTEGRITY or not (dist / "index.html").is_file():
        return None
    return dist


def npm_pack(destination: Path, version: str = OHIF_VERSION, npm: str | None = None) -> Path:
    """Download the package tarball with ``npm pack`` into ``destination``; returns its path."""
    npm = npm or shutil.which("npm")
    if npm is None:
        raise OhifInstallError("npm is not installed; it is needed once to fetch OHIF")
    result = subprocess.run(
        [npm, "pack", f"{OHIF_PACKAGE}@{version}", "--json", "--pack-destination",
         str(destination)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise OhifInstallError(f"npm pack {OHIF_PACKAGE}@{version} failed: {' '.join(tail)}")
    try:
        filename = json.loads(result.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as error:
        raise OhifInstallError(f"npm pack gave no tarball name: {error}") from None
    return destination / filename


def unpack_dist(tarball: Path, destination: Path) -> None:
    """Unpack ``package/dist/**`` of the tarball into ``destination/dist``."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith("package/dist/"):
                continue
            member.name = member.name[len("package/") :]
            members.append(member)
        if not members:
            raise OhifInstallError(f"{tarball.name} has no package/dist folder")
        archive.extractall(destination, members=members, filter="data")


def ensure_ohif(cache: Path, npm: str | None = None) -> Path:
    """The pinned OHIF build's ``dist`` folder, installing it first if needed."""
    cache = Path(cache)
    existing = installed_dist(cache)
    if existing is not None:
        return existing
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".install-") as work:
        work_dir = Path(work)
        tarball = npm_pack(work_dir, npm=npm)
        integrity = sri_sha512(tarball)
        if integrity != OHIF_INTEGRITY:
            raise OhifInstallError(
                f"{OHIF_PACKAGE}@{OHIF_VERSION} from the registry does not match the pinned "
                f"integrity ({integrity[:24]}... instead of {OHIF_INTEGRITY[:24]}...)"
            )
        staged = work_dir / "staged"
        unpack_dist(tarball, staged)
        (staged / MARKER).write_text(
            json.dumps({"package": OHIF_PACKAGE, "version": OHIF_VERSION, "integrity": integrity})
        )
        target = cache / OHIF_VERSION
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    dist = installed_dist(cache)
    if dist is None:
        raise OhifInstallError(f"OHIF install in {cache / OHIF_VERSION} is incomplete")
    return dist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/ohif"))
    args = parser.parse_args(argv)
    try:
        dist = ensure_ohif(args.cache)
    except OhifInstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"OHIF {OHIF_VERSION}: {dist}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
