"""Turn uploaded files into one input folder or file that ``medplug.ingest`` can read.

Files are stored under generated names (``00000.dcm``) so no uploaded file name,
which may carry a patient's name, ever reaches a path, log or error message. The
kind of each upload is read from its bytes, not its name. Zip archives are
unpacked entry by entry with limits on count and unpacked size, and an archive
with an absolute path, a ``..`` component or a symbolic link is refused whole.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fastapi import HTTPException

CHUNK = 1 << 20
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class UploadRefused(HTTPException):
    """An upload that is unsafe (400) or over a limit (413); the message names no file."""


@dataclass
class UploadLimits:
    max_files: int
    max_unzipped_bytes: int


@dataclass
class Upload:
    """One uploaded part: its bytes and the client's name (used only for its suffix)."""

    stream: BinaryIO
    filename: str | None


def sniff(head: bytes, filename: str | None) -> str:
    """``zip``, ``nifti``, ``nifti-gz`` or ``dicom`` from the first bytes (and suffix as a hint)."""
    name = (filename or "").lower()
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "nifti-gz"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if name.endswith(".nii"):
        return "nifti"
    return "dicom"  # preamble-less DICOM; ingest says clearly if it is not


def save_uploads(uploads: list[Upload], folder: Path, limits: UploadLimits) -> Path:
    """Write the uploads into ``folder`` and return what to give ``load_case``.

    That is the single NIfTI file, or the folder of DICOM files.
    """
    if not uploads:
        raise UploadRefused(400, "no file uploaded and no DICOMweb study given")
    if len(uploads) > limits.max_files:
        raise UploadRefused(413, f"{len(uploads)} files uploaded; the limit is {limits.max_files}")
    folder.mkdir(parents=True, exist_ok=True)
    kinds = []
    for index, upload in enumerate(uploads):
        head = upload.stream.read(512)
        upload.stream.seek(0)
        kind = sniff(head, upload.filename)
        kinds.append(kind)
        if kind == "zip":
            if len(uploads) > 1:
                raise UploadRefused(400, "upload one zip archive on its own, not with other files")
            return _extract_zip(upload.stream, folder, limits)
        target = folder / f"{index:05d}{_suffix(kind)}"
        with target.open("wb") as out:
            shutil.copyfileobj(upload.stream, out, CHUNK)
    return _input_path(folder, kinds)


def _suffix(kind: str) -> str:
    return {"nifti-gz": ".nii.gz", "nifti": ".nii"}.get(kind, ".dcm")


def _input_path(folder: Path, kinds: Iterable[str]) -> Path:
    kinds = list(kinds)
    niftis = [kind for kind in kinds if kind.startswith("nifti")]
    if niftis and len(kinds) > 1:
        raise UploadRefused(
            400, "upload one NIfTI file, or the DICOM files of one series, not a mix"
        )
    if niftis:
        return next(folder.iterdir())
    return folder


def _extract_zip(stream: BinaryIO, folder: Path, limits: UploadLimits) -> Path:
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as exc:
        raise UploadRefused(400, "the uploaded zip archive is corrupt") from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        for number, info in enumerate(archive.infolist(), start=1):
            _check_entry(number, info)
        entries = [info for info in entries if not _is_noise(info.filename)]
        if len(entries) > limits.max_files:
            raise UploadRefused(
                413, f"zip holds {len(entries)} files; the limit is {limits.max_files}"
            )
        if sum(info.file_size for info in entries) > limits.max_unzipped_bytes:
            raise UploadRefused(
                413, f"zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes"
            )
        kinds = []
        budget = limits.max_unzipped_bytes
        for index, info in enumerate(entries):
            with archive.open(info) as source:
                head = source.read(512)
            kind = sniff(head, info.filename)
            if kind == "zip":
                raise UploadRefused(400, "zip archives inside the zip are not accepted")
            kinds.append(kind)
            target = folder / f"{index:05d}{_suffix(kind)}"
            try:
                budget -= _copy_bounded(archive, info, target, budget, limits)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise UploadRefused(400, f"zip entry #{index + 1} is corrupt") from exc
    if not kinds:
        raise UploadRefused(400, "the uploaded zip archive holds no files")
    return _input_path(folder, kinds)


def _check_entry(number: int, info: zipfile.ZipInfo) -> None:
    """Refuse absolute paths, ``..`` and links: the classic zip-slip attacks."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    drive_letter = len(name) > 1 and name[1] == ":"
    if path.is_absolute() or drive_letter or ".." in path.parts:
        raise UploadRefused(
            400, f"zip entry #{number} has an absolute path or '..'; archive refused"
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadRefused(400, f"zip entry #{number} is a symbolic link; archive refused")


def _is_noise(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts) or (
        parts[-1].lower() in ("dicomdir", "thumbs.db")
    )


def _copy_bounded(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: UploadLimits
) -> int:
    """Copy one entry, counting real bytes: a zip bomb can lie about ``file_size``."""
    written = 0
    with archive.open(info) as source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > budget:
                raise UploadRefused(
                    413,
                    f"zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes",
                )
            out.write(chunk)
    return written
