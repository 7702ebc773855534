"""Turn uploaded files into one input folder or file that ``medplug.ingest`` can read.

Files are stored under generated names (``00000.dcm``) so no uploaded file name,
which may carry a patient's name, ever reaches a path, log or error message. The
kind of each upload is read from its bytes, not its name. Zip archives are
unpacked entry by entry with limits on count and real unpacked size (per entry
and in total, counted while reading, since a zip's declared sizes can lie); only
stored and deflated entries are accepted; an archive with an absolute path, a
``..`` component, a symbolic link or an encrypted entry is refused whole.
"""

from __future__ import annotations

import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fastapi import HTTPException

CHUNK = 1 << 20
ACCEPTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
COMPRESSION_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 93: "Zstandard"}
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class UploadRefused(HTTPException):
    """An upload that is unsafe (400) or over a limit (413); the message names no file."""


@dataclass
class UploadLimits:
    max_files: int
    max_unzipped_bytes: int
    max_entry_bytes: int = 1024**3
    max_entries: int = 0  # zip entries of any kind (folders, __MACOSX); 0: 2 * max_files + 16

    def __post_init__(self) -> None:
        if self.max_entries <= 0:
            self.max_entries = 2 * self.max_files + 16


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
    """Unpack a zip of one series, trusting none of the sizes or names it declares.

    A zip's central directory can lie: sizes are only what the archive claims,
    and bzip2/LZMA entries are decompressed by ``zipfile`` in one call however
    large they grow. So only stored and deflated entries are accepted (deflate
    is read in bounded chunks), the entry count is checked before the central
    directory is parsed, and real unpacked bytes are counted per entry and in
    total while copying, stopping at the limit.
    """
    _check_entry_count(stream, limits)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise UploadRefused(400, "the uploaded zip archive is corrupt") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise UploadRefused(
                413, f"zip holds {len(infos)} entries; the limit is {limits.max_entries}"
            )
        for number, info in enumerate(infos, start=1):
            _check_entry(number, info)
        entries = [info for info in infos if not info.is_dir() and not _is_noise(info.filename)]
        if len(entries) > limits.max_files:
            raise UploadRefused(
                413, f"zip holds {len(entries)} files; the limit is {limits.max_files}"
            )
        if sum(info.file_size for info in entries) > limits.max_unzipped_bytes:
            raise UploadRefused(
                413, f"zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes"
            )
        if any(info.file_size > limits.max_entry_bytes for info in entries):
            raise UploadRefused(
                413,
                f"a zip entry unpacks to more than the per-file limit of "
                f"{limits.max_entry_bytes} bytes",
            )
        kinds = []
        budget = limits.max_unzipped_bytes
        for index, info in enumerate(entries):
            target = folder / f"{index:05d}.part"
            try:
                written, head = _copy_bounded(archive, info, index, target, budget, limits)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                target.unlink(missing_ok=True)
                raise UploadRefused(400, f"zip entry #{index + 1} is corrupt") from exc
            budget -= written
            kind = sniff(head, info.filename)
            if kind == "zip":
                raise UploadRefused(400, "zip archives inside the zip are not accepted")
            kinds.append(kind)
            target.rename(folder / f"{index:05d}{_suffix(kind)}")
    if not kinds:
        raise UploadRefused(400, "the uploaded zip archive holds no files")
    return _input_path(folder, kinds)


def _check_entry_count(stream: BinaryIO, limits: UploadLimits) -> None:
    """Read the entry count from the end record before ``ZipFile`` parses every entry.

    A few hundred MiB of central directory is millions of ``ZipInfo`` objects:
    refused here from 22 bytes, not after building them all in memory.
    """
    try:
        record = zipfile._EndRecData(stream)  # type: ignore[attr-defined]
    except (OSError, ValueError, struct.error):
        record = None
    finally:
        stream.seek(0)
    if not record:
        raise UploadRefused(400, "the uploaded zip archive is corrupt (no central directory)")
    total = record[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if total > limits.max_entries:
        raise UploadRefused(413, f"zip holds {total} entries; the limit is {limits.max_entries}")


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
    if info.flag_bits & 0x1:
        raise UploadRefused(400, f"zip entry #{number} is encrypted; archive refused")
    if info.compress_type not in ACCEPTED_COMPRESSION:
        method = COMPRESSION_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise UploadRefused(
            400,
            f"zip entry #{number} is compressed with {method}; only stored or deflated "
            "entries are accepted (re-create the zip with ordinary compression)",
        )


def _is_noise(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts) or (
        parts[-1].lower() in ("dicomdir", "thumbs.db")
    )


def _copy_bounded(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    index: int,
    target: Path,
    budget: int,
    limits: UploadLimits,
) -> tuple[int, bytes]:
    """Copy one entry counting real bytes; returns the count and the first 512 bytes."""
    written = 0
    head = b""
    with archive.open(info) as source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limits.max_entry_bytes:
                raise UploadRefused(
                    413,
                    f"zip entry #{index + 1} unpacks to more than the per-file limit of "
                    f"{limits.max_entry_bytes} bytes",
                )
            if written > budget:
                raise UploadRefused(
                    413,
                    f"zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes",
                )
            if len(head) < 512:
                head += chunk[: 512 - len(head)]
            out.write(chunk)
    return written, head
