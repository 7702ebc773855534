"""Labelled image data for training and evaluation: MedMNIST .npz or a manifest CSV.

Both end up as ``LabelledImages``: ImageVolumes with label indices and case ids,
so training, evaluation and prediction share one preprocessing path. Every
problem (unknown label, missing file, NaNs, wrong dimensionality) is reported
with the case it came from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medplug.contract import ImageVolume
from medplug.errors import DataError, MedplugError
from medplug_image.config import ImageModelConfig

NPZ_SPLITS = ("train", "val", "test")
IMAGE_COLUMNS = ("image", "image_path", "path", "nifti", "dicom_dir")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class LabelledImages:
    """Images with integer labels (indices into the config's labels)."""

    volumes: list[ImageVolume]
    labels: np.ndarray
    case_ids: list[str]
    source: str = ""
    splits: list[str] = field(default_factory=list)  # per case, manifests only

    def __len__(self) -> int:
        return len(self.volumes)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(
            volumes=[self.volumes[i] for i in indices],
            labels=self.labels[indices],
            case_ids=[self.case_ids[i] for i in indices],
            source=self.source,
            splits=[self.splits[i] for i in indices] if self.splits else [],
        )


# --------------------------------------------------------------------------- images


def load_image(path: Path) -> ImageVolume:
    """Read a DICOM folder/file or NIfTI file through medplug's ingest path.

    ``medplug.ingest.load_image`` is the product's reader (series selection,
    geometry checks, RAS affine). Until it is installed, NIfTI is read with
    nibabel and DICOM with MONAI's PydicomReader, which give the same RAS affine.
    """
    try:
        from medplug.ingest import load_image as ingest_load_image
    except ImportError:
        return _load_image_without_ingest(path)
    return ingest_load_image(path)


def _load_image_without_ingest(path: Path) -> ImageVolume:
    if path.name.endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        image = nib.load(str(path))
        array = np.asarray(image.dataobj, dtype=np.float32)
        return ImageVolume(array=array, affine=np.asarray(image.affine), source=str(path))
    from monai.transforms import LoadImage

    loaded = LoadImage(image_only=True, reader="PydicomReader")(str(path))
    return ImageVolume(
        array=loaded.numpy(),
        affine=np.asarray(loaded.affine, dtype=np.float64),
        modality="CT",
        source=str(path),
    )


# --------------------------------------------------------------------------- labels


def label_index(value: str, labels: list[str], case_id: str) -> int:
    """A label given by name or index, checked against the config's labels."""
    text = str(value).strip()
    if text in labels:
        return labels.index(text)
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number.is_integer() and 0 <= int(number) < len(labels):
        return int(number)
    raise DataError(
        f"case {case_id!r}: label {text!r} is not one of the configured labels {labels}"
    )


# --------------------------------------------------------------------------- npz


def read_npz(path: Path, split: str, config: ImageModelConfig) -> LabelledImages:
    """One split of a MedMNIST-style .npz (``<split>_images``, ``<split>_labels``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data[f"{split}_images"]
            raw_labels = data[f"{split}_labels"]
    except KeyError as exc:
        raise DataError(f"{path}: no {split}_images / {split}_labels arrays ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from exc
    raw_labels = np.asarray(raw_labels).reshape(len(raw_labels), -1)
    if raw_labels.shape[1] != 1 or len(raw_labels) != len(images):
        raise DataError(f"{path}: {split}_labels must be one label per image")
    labels = raw_labels[:, 0].astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= config.num_classes))
    if bad.size:
        raise DataError(
            f"{path}: case '{split}-{bad[0]}' has label {labels[bad[0]]}, outside the "
            f"{config.num_classes} configured labels {config.labels}"
        )
    volumes = [
        ImageVolume(array=image, source=f"{path.name}:{split}[{i}]")
        for i, image in enumerate(images)
    ]
    case_ids = [f"{split}-{i}" for i in range(len(images))]
    return LabelledImages(volumes, labels, case_ids, source=str(path))


# --------------------------------------------------------------------------- manifest


def read_manifest(
    path: Path, config: ImageModelConfig, image_column: str | None = None
) -> LabelledImages:
    """A CSV with ``case_id``, ``label`` and an image path (DICOM folder or NIfTI).

    Paths are relative to the CSV. An optional ``split`` column (train/val/test)
    fixes the split; without it ``split_train_val`` draws one.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read manifest ({exc})") from exc
    if not rows:
        raise DataError(f"{path}: manifest has no rows")
    columns = list(rows[0])
    column = image_column or next((c for c in IMAGE_COLUMNS if c in columns), None)
    for needed in ("case_id", "label", column):
        if needed is None or needed not in columns:
            raise DataError(
                f"{path}: manifest needs columns case_id, label and an image column "
                f"(one of {IMAGE_COLUMNS}); found {columns}"
            )
    volumes, labels, case_ids, splits = [], [], [], []
    for row in rows:
        case_id = row["case_id"].strip()
        labels.append(label_index(row["label"], config.labels, case_id))
        image_path = (path.parent / row[column].strip()).resolve()
        try:
            volume = load_image(image_path)
        except MedplugError as exc:
            raise DataError(f"case {case_id!r}: {exc}") from exc
        except Exception as exc:  # readers raise many types; name the case, keep the cause
            raise DataError(
                f"case {case_id!r}: cannot read image {image_path} ({type(exc).__name__}: {exc})"
            ) from exc
        volumes.append(volume)
        case_ids.append(case_id)
        splits.append(row.get("split", "").strip().lower())
    return LabelledImages(volumes, np.asarray(labels, dtype=np.int64), case_ids, str(path), splits)


def split_train_val(
    data: LabelledImages, val_fraction: float, seed: int
) -> tuple[LabelledImages, LabelledImages]:
    """Use the manifest's split column, else a stratified random split."""
    if data.splits and any(data.splits):
        splits = np.asarray(data.splits)
        train, val = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
        if len(train) and len(val):
            return data.subset(train), data.subset(val)
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        val_idx.extend(members[: max(1, round(len(members) * val_fraction))])
    is_val = np.zeros(len(data), dtype=bool)
    is_val[val_idx] = True
    return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))


def is_npz(path: Path) -> bool:
    return Path(path).suffix.lower() == ".npz"
