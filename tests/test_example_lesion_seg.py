"""The example third-party segmentation plugin (examples/medplug-lesion-seg), installed with
pip the way a hospital would install its own package, trained, and run on held-out cases.

Everything is real: pip builds and installs the example's distribution into a private
folder, ``medplug plugins`` and ``medplug train lesion-seg`` find it through its entry
points in a fresh interpreter, and the trained UNet segments DICOM series it never saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medplug.contract import Case, ImageVolume
from medplug.errors import InputError
from medplug.ingest import load_case, load_image

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "medplug-lesion-seg"
BUILD_LEFTOVERS = ("build", "*.egg-info", "__pycache__", ".ruff_cache")
# Small but real: 30 epochs on a 16-case cohort at one thread (~20 s of training).
TINY_CONFIG = {"epochs": 30, "patience": 30, "patches_per_case": 8, "num_threads": 1, "seed": 0}
# Measured with TINY_CONFIG: Dice 0.82, 0.85 and 0.83 on the three held-out (seed 11) lesion
# cases, no false-positive case. 0.6 leaves room for another machine's arithmetic, and still
# fails a mask one slice (2.5 mm) off: the lesions span only 2-4 slices.
DICE_FLOOR = 0.6


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MEDPLUG_TABLES="plain")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def lesion_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/medplug-lesion-seg built and pip-installed (not editable) into a folder."""
    root = tmp_path_factory.mktemp("lesion_seg")
    # Built from a copy: a build leaves build/ and *.egg-info beside the sources it reads.
    source = root / "medplug-lesion-seg"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        check=True,
    )  # fmt: skip
    assert (site / "medplug_lesion_seg" / "medplug-plugin.json").is_file()
    return site


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cases from another seed than training's: the model never saw them."""
    from medplug.sampledata import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("lesion_held_out"), n_cases=6, seed=11)


@pytest.fixture(scope="module")
def lesion_model(lesion_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained through ``medplug train lesion-seg`` in a fresh interpreter."""
    from medplug.sampledata import generate_cohort

    root = tmp_path_factory.mktemp("lesion_train")
    cohort = generate_cohort(root / "cohort", n_cases=16, seed=5)
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out = root / "model"
    command = [sys.executable, "-m", "medplug.cli.main", "train", "lesion-seg"]
    command += ["--cohort", str(cohort), "--out", str(out), "--config", str(config)]
    done = subprocess.run(
        command, env=_env(lesion_site), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "medplug.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("*.pt")) and not list(out.glob("*.pth"))  # never pickle
    return out


@pytest.fixture
def plugin(lesion_site: Path, lesion_model: Path, monkeypatch: pytest.MonkeyPatch):
    from medplug.registry import load_plugin

    monkeypatch.syspath_prepend(str(lesion_site))
    return load_plugin("lesion-seg", lesion_model)


def test_plugins_lists_the_installed_package(lesion_site: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", "plugins", "--json"],
        env=_env(lesion_site), capture_output=True, text=True, check=True,
    )  # fmt: skip
    entries = {entry["name"]: entry for entry in json.loads(done.stdout)}
    entry = entries["lesion-seg"]
    assert entry["error"] is None
    assert entry["distribution"] == "medplug-lesion-seg"
    assert entry["target"] == "medplug_lesion_seg.plugin:LesionSegPlugin"
    info = entry["info"]
    assert info["task"] == "segmentation" and info["labels"] == ["no_lesion", "lesion"]
    assert info["inputs"]["image"]["spatial_dims"] == 3
    assert "segmentation" in info["outputs"]


def _lesion_row(cohort: Path) -> dict[str, str]:
    import csv

    with (cohort / "manifest.csv").open(newline="") as handle:
        return next(row for row in csv.DictReader(handle) if row["label"] == "1")


def test_held_out_dicom_mask_is_on_the_input_grid_and_overlaps_the_lesion(
    plugin, held_out: Path
) -> None:
    from medplug_lesion_seg.evaluate import case_dice

    row = _lesion_row(held_out)
    case = load_case(held_out / row["dicom_dir"], case_id=row["case_id"])
    truth = load_image(held_out / row["lesion_mask"]).array > 0.5
    prediction = plugin.predict(case)
    segmentation = prediction.segmentation
    image = case.image
    assert segmentation is not None and image is not None
    assert segmentation.label_map.shape == image.array.shape
    assert np.allclose(segmentation.affine, image.affine)
    segmentation.check_geometry(image)
    (segment,) = segmentation.segments
    assert (segment.value, segment.label, segment.type.value) == (1, "lesion", "52988006")
    assert segment.category.scheme == "SCT"
    dice = case_dice(segmentation.label_map == 1, truth)
    # See DICE_FLOOR: a mask shifted or flipped off the input grid fails it.
    assert dice > DICE_FLOOR, dice
    assert prediction.label == "lesion"
    assert prediction.probabilities["lesion"] >= 0.5
    assert prediction.outputs["lesion_volume_ml"] > 0
    assert prediction.explanation is not None
    assert prediction.explanation.heatmap.shape == image.array.shape


def test_evaluate_reports_dice_on_held_out_cohort(plugin, held_out: Path, tmp_path: Path) -> None:
    metrics = plugin.evaluate(held_out, tmp_path / "evaluation")
    assert metrics["n"] == 6 and metrics["n_lesion"] == 3
    assert metrics["dice_lesion_cases"] > DICE_FLOOR
    assert metrics["false_positive_cases"] == 0 and metrics["missed_lesion_cases"] == 0
    assert 0.0 <= metrics["detection_auc"] <= 1.0
    stored = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert stored["dice_lesion_cases"] == pytest.approx(metrics["dice_lesion_cases"])
    assert (tmp_path / "evaluation" / "per_case.csv").is_file()
    assert (tmp_path / "evaluation" / "roc.png").is_file()


def test_a_2d_image_is_refused_with_a_medplug_error(plugin) -> None:
    flat = ImageVolume(array=np.zeros((64, 64), dtype=np.float32), source="chest.png")
    case = Case(case_id="flat", images=[flat])
    with pytest.raises(InputError, match=r"expects a 3D image, got a 2D array.*chest\.png"):
        plugin.predict(case)
    (failed,) = plugin.predict_batch([case])
    assert failed.failed and failed.error["type"] == "InputError"
