"""``monai-bundle``: MONAI Bundle folders (built and trained here) run as they are.

Two real bundles in MONAI's layout and config syntax (``bundle_support``): a 3D
lesion classifier and a 3D lesion UNet, both trained on the sample cohort. They
go through ``medplug predict`` (CLI), ``batch`` and ``serve``; MONAI's own
``python -m monai.bundle run`` on the same files must give the same outputs;
broken bundles are refused with one line naming the file and the key.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from batch_support import dciodvfy_errors, tool
from bundle_support import (
    CLASSIFIER_SIZE,
    classifier_inference,
    dice,
    metadata,
    read_rows,
    segmenter_inference,
    train_classifier,
    train_segmenter,
    write_bundle,
)

from medplug.contract import Prediction
from medplug.errors import MedplugError, ModelFileError, PluginError
from medplug.ingest import load_case
from medplug.registry import load_plugin
from medplug_bundle.identity import folder_identity

PLUGIN = "monai-bundle"
CLASSES = ["no_lesion", "lesion"]
SEG_CLASSES = ["background", "lesion"]


def medplug_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medplug.cli.main", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def classifier_bundle(sample_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta = metadata("classification", CLASSES, CLASSIFIER_SIZE, "lesion / no lesion in chest CT")
    folder = tmp_path_factory.mktemp("bundles") / "lesion_classifier"
    return write_bundle(folder, classifier_inference(), meta, train_classifier(sample_cohort))


@pytest.fixture(scope="session")
def segmenter_bundle(sample_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    shape = ["4*n", "4*n", "4*n"]
    meta = metadata("segmentation", SEG_CLASSES, shape, "lesion segmentation in chest CT")
    folder = tmp_path_factory.mktemp("bundles") / "lesion_segmenter"
    return write_bundle(folder, segmenter_inference(), meta, train_segmenter(sample_cohort))


@pytest.fixture(scope="session")
def heldout_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medplug.sampledata import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("heldout"), n_cases=6, seed=1)


# MONAI's SupervisedEvaluator (the bundles' `evaluator`) runs on pytorch-ignite ([test] extra)
needs_ignite = pytest.mark.skipif(
    importlib.util.find_spec("ignite") is None, reason="pytorch-ignite not installed"
)


def copy_name(image: Path) -> str:
    return f"{image.parent.name}.nii.gz"


def monai_bundle_run(bundle: Path, images: list[Path], out: Path) -> Path:
    """MONAI's own ``python -m monai.bundle run`` of the bundle on ``images``."""
    data = out / "data"
    data.mkdir(parents=True)
    for image in images:  # cohort files are all image.nii.gz: name the copies by case
        shutil.copy(image, data / copy_name(image))
    arguments = {
        "config_file": str(bundle / "configs" / "inference.json"),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "bundle_root": str(bundle),
        "dataset_dir": str(data),
        "output_dir": str(out / "eval"),
    }
    if importlib.util.find_spec("fire") is not None:  # the CLI parses its arguments with fire
        command = [sys.executable, "-m", "monai.bundle", "run"]
        command += [item for key, value in arguments.items() for item in (f"--{key}", value)]
    else:  # the function that CLI calls, with the same arguments
        call = f"from monai.bundle import run; run(**{arguments!r})"
        command = [sys.executable, "-c", call]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "eval"


# ----------------------------------------------------------------- loading


def test_metadata_becomes_plugin_info_and_the_folder_has_an_identity(
    classifier_bundle: Path, tmp_path: Path
) -> None:
    plugin = load_plugin(PLUGIN, classifier_bundle)
    info = plugin.info
    assert info.name == PLUGIN and info.version == "0.1.0" and info.task == "classification"
    assert info.labels == CLASSES
    assert info.inputs["image"].spatial_dims == 3 and info.inputs["image"].modality == "CT"
    assert info.inputs["image"].spatial_size == CLASSIFIER_SIZE
    identity, manifest = folder_identity(classifier_bundle)
    assert plugin.model_identity == identity
    assert set(manifest) == {"configs/inference.json", "configs/metadata.json", "models/model.pt"}
    changed = shutil.copytree(classifier_bundle, tmp_path / "changed")
    (changed / "configs" / "inference.json").write_text(
        (changed / "configs" / "inference.json").read_text() + "\n"
    )
    assert load_plugin(PLUGIN, changed).model_identity != identity


# ----------------------------------------------------------------- predict


def test_predict_cli_classifies_a_dicom_series(classifier_bundle: Path, sample_cohort: Path):
    rows = read_rows(sample_cohort)
    plugin = load_plugin(PLUGIN, classifier_bundle)
    plugin.explain = False  # Grad-CAM is checked on the CLI's answer below
    correct = 0
    for row in rows:
        prediction = plugin.predict(load_case(sample_cohort / row["dicom_dir"]))
        assert set(prediction.probabilities) == set(CLASSES)
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
        correct += prediction.label == row["label_name"]
    assert correct >= len(rows) * 3 // 4, f"{correct}/{len(rows)} right on its training cohort"

    row = rows[0]
    result = medplug_cli("predict", str(sample_cohort / row["dicom_dir"]), "--plugin", PLUGIN,
                         "--model", str(classifier_bundle), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    payload.pop("ingest_s")
    printed = Prediction.from_json(payload)
    plugin.explain = True
    alone = plugin.predict(load_case(sample_cohort / row["dicom_dir"]))
    assert printed.label == alone.label
    for name in CLASSES:
        assert printed.probabilities[name] == pytest.approx(alone.probabilities[name], abs=1e-6)
    assert printed.provenance["bundle_identity"] == plugin.model_identity
    assert printed.provenance["config_steps_dropped"] == ["postprocessing#transforms#1"]
    heatmap = printed.explanation.heatmap  # Grad-CAM, on the input's grid
    assert heatmap.shape == alone.explanation.heatmap.shape == (64, 64, 32)
    assert printed.provenance["explanation"].startswith("grad-cam on features.")


def test_segmentation_is_on_the_input_grid_with_dice_on_a_heldout_cohort(
    segmenter_bundle: Path, heldout_cohort: Path
) -> None:
    plugin = load_plugin(PLUGIN, segmenter_bundle)
    assert plugin.info.task == "segmentation" and "segmentation" in plugin.info.outputs
    scores = []
    for row in read_rows(heldout_cohort):
        case = load_case(heldout_cohort / row["dicom_dir"])  # a DICOM series, not the NIfTI
        prediction = plugin.predict(case)  # Plugin.predict checks the mask's geometry
        segmentation = prediction.segmentation
        assert segmentation is not None
        assert segmentation.label_map.shape == case.image.array.shape
        truth = nib.load(heldout_cohort / row["lesion_mask"])
        assert np.allclose(truth.affine, case.image.affine, atol=1e-3)
        if row["label_name"] == "lesion":
            scores.append(dice(segmentation.label_map, np.asarray(truth.dataobj)))
            assert prediction.outputs["lesion_volume_ml"] > 0
    print(f"\nheld-out lesion Dice (seed 1, {len(scores)} lesions): {np.round(scores, 3)}, "
          f"mean {np.mean(scores):.3f}")  # fmt: skip
    assert np.mean(scores) > 0.5


# ----------------------------------------------------------------- equivalence


@needs_ignite
def test_monai_bundle_run_and_medplug_agree_on_classification(
    classifier_bundle: Path, sample_cohort: Path, tmp_path: Path
) -> None:
    images = [sample_cohort / row["nifti"] for row in read_rows(sample_cohort)[:3]]
    eval_dir = monai_bundle_run(classifier_bundle, images, tmp_path)
    with (eval_dir / "predictions.csv").open(newline="") as handle:
        monai_rows = {Path(row[0]).name: [float(v) for v in row[1:]] for row in csv.reader(handle)}
    plugin = load_plugin(PLUGIN, classifier_bundle)
    worst = 0.0
    for image in images:
        ours = plugin.predict(load_case(image)).probabilities
        theirs = monai_rows[copy_name(image)]
        worst = max(worst, max(abs(ours[name] - theirs[i]) for i, name in enumerate(CLASSES)))
    print(f"\nmonai.bundle run vs medplug, classification: max |dp| = {worst:.2e}")
    assert worst <= 1e-5


@needs_ignite
def test_monai_bundle_run_and_medplug_agree_on_segmentation(
    segmenter_bundle: Path, heldout_cohort: Path, tmp_path: Path
) -> None:
    rows = [row for row in read_rows(heldout_cohort) if row["label_name"] == "lesion"][:2]
    images = [heldout_cohort / row["nifti"] for row in rows]
    eval_dir = monai_bundle_run(segmenter_bundle, images, tmp_path)
    plugin = load_plugin(PLUGIN, segmenter_bundle)
    for image in images:
        saved = nib.load(eval_dir / copy_name(image).replace(".nii.gz", "_seg.nii.gz"))
        ours = plugin.predict(load_case(image)).segmentation
        theirs = np.asarray(saved.dataobj).reshape(ours.label_map.shape)
        assert np.allclose(saved.affine, nib.load(image).affine, atol=1e-4)
        assert theirs.sum() > 0
        assert np.array_equal(ours.label_map, theirs.astype(np.uint8))


# ----------------------------------------------------------------- batch and serve


def test_batch_writes_sr_heatmap_and_seg_for_the_bundles(
    classifier_bundle: Path, segmenter_bundle: Path, sample_cohort: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    lesion = next(row for row in read_rows(sample_cohort) if row["label_name"] == "lesion")
    shutil.copytree(sample_cohort / lesion["dicom_dir"], source / lesion["case_id"])
    for bundle in (classifier_bundle, segmenter_bundle):
        out = tmp_path / f"out_{bundle.name}"
        result = medplug_cli("batch", str(source), "--plugin", PLUGIN, "--model", str(bundle),
                             "--out", str(out), "--workers", "0", "--no-progress")  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert len(records) == 1
        for record in records:
            assert record["status"] == "ok", record["errors"]
            (res,) = record["results"]
            assert res["plugin"] == PLUGIN
            files = record["provenance"]["files"]
            sr = pydicom.dcmread(out / files["sr"])
            assert sr.StudyInstanceUID == record["study_uid"] and PLUGIN in str(sr)
            if bundle == classifier_bundle:  # Grad-CAM on the bundle's network_def
                assert set(files) == {"sr", f"heatmap:{PLUGIN}", "fhir"}
                pm = pydicom.dcmread(out / files[f"heatmap:{PLUGIN}"])
                assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
                assert pm.StudyInstanceUID == record["study_uid"]
                assert int(pm.NumberOfFrames) == 32  # every slice of the 64x64x32 series
            else:  # the label map as DICOM SEG, on the source slices
                assert set(files) == {"sr", f"seg:{PLUGIN}", "fhir"}
                seg = pydicom.dcmread(out / files[f"seg:{PLUGIN}"])
                assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
                assert seg.StudyInstanceUID == record["study_uid"]
                assert seg.SegmentSequence[0].SegmentLabel == "lesion"
                assert "lesion" in str(sr)  # the SR cites the segment and its volume
            if tool("dciodvfy"):
                for name, path in files.items():
                    if name != "fhir":
                        assert dciodvfy_errors(out / path) == [], path


def test_serve_predicts_with_a_bundle(
    segmenter_bundle: Path, sample_cohort: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from medplug.serve import ServeSettings, create_app

    models = tmp_path / "models"
    models.mkdir()
    (models / PLUGIN).symlink_to(segmenter_bundle, target_is_directory=True)
    token = "bundle-token-0123456789abcdef"
    client = TestClient(create_app(ServeSettings(token=token, models_dir=models)))
    row = next(r for r in read_rows(sample_cohort) if r["label_name"] == "lesion")
    nifti = sample_cohort / row["nifti"]
    response = client.post(
        f"/predict/{PLUGIN}",
        headers={"Authorization": f"Bearer {token}"},
        files={"files": ("ct.nii.gz", nifti.read_bytes(), "application/gzip")},
    )
    assert response.status_code == 200, response.text
    prediction = Prediction.from_json(response.json())
    assert prediction.segmentation is not None
    assert prediction.segmentation.label_map.shape == nib.load(nifti).shape
    assert prediction.segmentation.label_map.max() == 1


# ----------------------------------------------------------------- model formats


def test_torchscript_bundle_gives_the_same_probabilities(
    classifier_bundle: Path, sample_cohort: Path, tmp_path: Path
) -> None:
    plain = load_plugin(PLUGIN, classifier_bundle)
    scripted = shutil.copytree(classifier_bundle, tmp_path / "scripted")
    (scripted / "models" / "model.pt").unlink()
    torch.jit.script(plain.network).save(str(scripted / "models" / "model.ts"))
    config = json.loads((scripted / "configs" / "inference.json").read_text())
    del config["network_def"]
    config["network"] = "$torch.jit.load(@bundle_root + '/models/model.ts')"
    (scripted / "configs" / "inference.json").write_text(json.dumps(config))
    plugin = load_plugin(PLUGIN, scripted)
    assert plugin.weights.name == "model.ts"
    case = load_case(sample_cohort / read_rows(sample_cohort)[0]["nifti"])
    ours, theirs = plugin.predict(case).probabilities, plain.predict(case).probabilities
    assert all(abs(ours[k] - theirs[k]) < 1e-5 for k in CLASSES)


# ----------------------------------------------------------------- broken bundles


def _broken(bundle: Path, tmp_path: Path, how: str) -> Path:
    folder = shutil.copytree(bundle, tmp_path / how)
    configs = folder / "configs"
    if how == "no_metadata":
        (configs / "metadata.json").unlink()
    elif how == "pickled_model":
        from monai.bundle import ConfigParser

        network = ConfigParser(classifier_inference()).get_parsed_content("network_def")
        torch.save(network, folder / "models" / "model.pt")  # a whole pickled nn.Module
    elif how == "unknown_class":
        config = json.loads((configs / "inference.json").read_text())
        config["preprocessing"]["transforms"][3]["_target_"] = "ScaleIntensityRangeMagicd"
        (configs / "inference.json").write_text(json.dumps(config))
    elif how == "wrong_outputs":
        meta = json.loads((configs / "metadata.json").read_text())
        meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
        meta["network_data_format"]["outputs"]["pred"]["channel_def"]["2"] = "other"
        (configs / "metadata.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("how", "error", "names"),
    [
        ("no_metadata", ModelFileError, ["configs/metadata.json", "missing"]),
        ("pickled_model", ModelFileError, ["models/model.pt", "weights-only", "never unpickles"]),
        ("unknown_class", ModelFileError,
         ["configs/inference.json", "preprocessing#transforms#3#_target_",
          "ScaleIntensityRangeMagicd"]),
        ("wrong_outputs", PluginError,
         ["configs/metadata.json", "network_data_format.outputs.pred.num_channels", "3"]),
    ],
)  # fmt: skip
def test_broken_bundles_get_one_line_naming_file_and_key(
    classifier_bundle: Path,
    sample_cohort: Path,
    tmp_path: Path,
    how: str,
    error: type[MedplugError],
    names: list[str],
) -> None:
    folder = _broken(classifier_bundle, tmp_path, how)
    case = load_case(sample_cohort / read_rows(sample_cohort)[0]["nifti"])
    with pytest.raises(error) as raised:
        load_plugin(PLUGIN, folder).predict(case)
    message = str(raised.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    if how == "pickled_model":  # the CLI prints the same one line, no traceback
        result = medplug_cli("predict", str(sample_cohort / read_rows(sample_cohort)[0]["nifti"]),
                             "--plugin", PLUGIN, "--model", str(folder))  # fmt: skip
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "models/model.pt" in result.stderr


# ----------------------------------------------------------------- torchscript plugin


def _torchscript_folder(bundle: Path, folder: Path, description: dict) -> Path:
    folder.mkdir()
    network = load_plugin(PLUGIN, bundle).network
    torch.jit.script(network).save(str(folder / "model.ts"))
    (folder / "torchscript.json").write_text(json.dumps(description))
    return folder


def test_torchscript_plugin_matches_the_bundle_it_was_exported_from(
    classifier_bundle: Path, segmenter_bundle: Path, sample_cohort: Path, tmp_path: Path
) -> None:
    window = {"name": "window", "min": -1000, "max": 400}
    classifier = _torchscript_folder(classifier_bundle, tmp_path / "cls", {
        "name": "lesion-net", "version": "2.0.0", "task": "classification",
        "labels": CLASSES, "spatial_dims": 3, "modality": "CT",
        "preprocessing": [{"name": "orientation", "axcodes": "RAS"}, window,
                          {"name": "resize", "spatial_size": CLASSIFIER_SIZE}],
    })  # fmt: skip
    segmenter = _torchscript_folder(segmenter_bundle, tmp_path / "seg", {
        "task": "segmentation", "labels": SEG_CLASSES, "spatial_dims": 3,
        "preprocessing": [{"name": "orientation"}, {"name": "spacing", "pixdim": [1.5, 1.5, 2.5]},
                          window, {"name": "pad_divisible", "k": 4}],
    })  # fmt: skip
    scripted = load_plugin("torchscript", classifier)
    assert scripted.info.version == "2.0.0" and scripted.info.labels == CLASSES
    bundle = load_plugin(PLUGIN, classifier_bundle)
    row = next(r for r in read_rows(sample_cohort) if r["label_name"] == "lesion")
    case = load_case(sample_cohort / row["dicom_dir"])
    ours, theirs = scripted.predict(case).probabilities, bundle.predict(case).probabilities
    assert max(abs(ours[k] - theirs[k]) for k in CLASSES) < 1e-5

    mask = load_plugin("torchscript", segmenter).predict(case).segmentation
    reference = load_plugin(PLUGIN, segmenter_bundle).predict(case).segmentation
    assert mask.label_map.shape == case.image.array.shape
    assert dice(mask.label_map, reference.label_map) > 0.7

    description = json.loads((classifier / "torchscript.json").read_text())
    description["preprocessing"][1]["name"] = "sharpen"
    (classifier / "torchscript.json").write_text(json.dumps(description))
    with pytest.raises(
        ModelFileError, match=r"torchscript.json: preprocessing\[1\].name 'sharpen'"
    ):
        load_plugin("torchscript", classifier)
