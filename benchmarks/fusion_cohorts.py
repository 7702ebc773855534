"""Cohorts and side-by-side scoring for the fusion benchmark (used by ``fusion.py``).

Image and report models are trained by their own plugins' ``medplug train``
commands and used only through the registry (``load_plugin``), as fusion does.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from medplug.contract import Case, ImageVolume, Plugin

IMAGE_PLUGIN = "image-classifier"
REPORT_PLUGIN = "report-classifier"


def train_with_cli(args: list[str], out: Path, log: Path) -> Path:
    """``medplug train ...`` in a subprocess, unless ``out`` already holds a model."""
    if (out / "medplug.json").is_file():
        return out
    command = [sys.executable, "-m", "medplug.cli.main", "train", *args, "--out", str(out)]
    started = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    print(f"trained {out.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def positive_probability(plugin: Plugin, cases: list[Case]) -> np.ndarray:
    """P(positive class) from a plugin's calibrated predictions; NaN where it cannot answer."""
    usable = [i for i, case in enumerate(cases) if _has_input(plugin, case)]
    probs = np.full(len(cases), np.nan)
    positive = plugin.info.labels[1]
    for index, prediction in zip(
        usable, plugin.predict_batch([cases[i] for i in usable]), strict=True
    ):
        probs[index] = prediction.probabilities[positive]
    return probs


def _has_input(plugin: Plugin, case: Case) -> bool:
    kinds = [spec.kind for spec in plugin.info.inputs.values() if spec.required]
    return all(case.has(kind) for kind in kinds)


def without(cases: list[Case], modality: str) -> list[Case]:
    """Copies of ``cases`` with one modality removed (as if never provided)."""
    stripped = []
    for case in cases:
        clone = copy.copy(case)
        if modality == "image":
            clone.images = []
        elif modality == "report":
            clone.report = None
        else:
            clone.clinical = {}
        stripped.append(clone)
    return stripped


def late_fusion(*probabilities: np.ndarray) -> np.ndarray:
    """Average of the available plugin probabilities per case."""
    return np.nanmean(np.vstack(probabilities), axis=0)


def auc(labels: np.ndarray, scores: np.ndarray) -> str:
    """AUC as text; a case a model could not answer counts as an uninformative 0.5."""
    return f"{roc_auc_score(labels, np.nan_to_num(scores, nan=0.5)):.4f}"


def scores_of(predictions: list) -> np.ndarray:
    """``outputs['score']`` per prediction, NaN for failed ones."""
    return np.array([np.nan if p.failed else p.outputs["score"] for p in predictions])


def comparison_table(
    labels: np.ndarray,
    cases: list[Case],
    image: Plugin,
    report: Plugin,
    clinical_only: Plugin,
    fused: Plugin,
) -> list[str]:
    """The two tables: all modalities, then each modality removed at test time."""

    def fused_score(test_cases: list[Case]) -> np.ndarray:
        return scores_of(fused.predict_batch(test_cases))

    p_image = positive_probability(image, cases)
    p_report = positive_probability(report, cases)
    p_clinical = scores_of(clinical_only.predict_batch(cases))
    started = time.perf_counter()
    p_fused = fused_score(cases)
    per_case_ms = 1000 * (time.perf_counter() - started) / len(cases)
    lines = [
        "| model | inputs | test AUC |",
        "|---|---|---|",
        f"| image plugin alone | image | {auc(labels, p_image)} |",
        f"| report plugin alone | report | {auc(labels, p_report)} |",
        f"| clinical only (fusion head, clinical fields) | clinical | {auc(labels, p_clinical)} |",
        f"| late fusion: mean of image + report probabilities | image, report | "
        f"{auc(labels, late_fusion(p_image, p_report))} |",
        f"| late fusion: mean of image + report + clinical probabilities | all | "
        f"{auc(labels, late_fusion(p_image, p_report, p_clinical))} |",
        f"| **fusion plugin** | all | **{auc(labels, p_fused)}** |",
        "",
        f"Fusion plugin predict time, including both plugins' `embed` and the Shapley "
        f"explanations: {per_case_ms:.1f} ms per case.",
        "",
        "With one modality removed from every test case (the fusion model is the same one; "
        "late fusion averages what is left):",
        "",
        "| removed at test time | fusion AUC | drop vs all inputs | late fusion AUC "
        "(remaining plugins + clinical) |",
        "|---|---|---|---|",
    ]
    full = roc_auc_score(labels, np.nan_to_num(p_fused, nan=0.5))
    remaining = {"image": (p_report, p_clinical), "report": (p_image, p_clinical)}
    remaining["clinical"] = (p_image, p_report)
    for modality in ("image", "report", "clinical"):
        scores = fused_score(without(cases, modality))
        value = roc_auc_score(labels, np.nan_to_num(scores, nan=0.5))
        lines.append(
            f"| {modality} | {value:.4f} | {full - value:+.4f} | "
            f"{auc(labels, late_fusion(*remaining[modality]))} |"
        )
    return lines + [""]


# --------------------------------------------------------------------------- generated cohort


def generated_cohorts(work: Path, sizes: dict[str, int], options: dict) -> dict[str, Path]:
    """Three disjoint cohorts (different seeds): plugin training, fusion training, test."""
    from medplug.sampledata import generate_cohort

    folders = {}
    for seed, (part, size) in enumerate(sizes.items(), start=11):
        folder = work / f"cohort-{part}"
        if not (folder / "manifest.csv").is_file():
            generate_cohort(folder, n_cases=size, seed=seed, **options)
        folders[part] = folder
    return folders


# --------------------------------------------------------------------------- semi-synthetic


def iu_reports(path: Path) -> pd.DataFrame:
    """IU X-ray reports with text (findings + impression) and label 0 normal / 1 abnormal."""
    frame = pd.read_csv(path).fillna("")
    text = ("FINDINGS: " + frame["findings"] + "\nIMPRESSION: " + frame["impression"]).str.strip()
    frame = pd.DataFrame(
        {"report_text": text, "label": (frame["Problems"].str.strip() != "normal").astype(int)}
    )
    return frame[(frame["report_text"].str.len() > 30)].reset_index(drop=True)


def synthetic_clinical(
    labels: np.ndarray, rng: np.random.Generator, signal: float = 0.6, missing_rate: float = 0.1
) -> list[dict]:
    """Generated clinical fields carrying part of the label signal (not real patients)."""
    records = []
    for label in np.asarray(labels, dtype=int):  # uint8 labels would wrap 2*0-1 to 255
        shift = signal * (2 * int(label) - 1)
        smoking = rng.choice(["never", "former", "current"], p=_smoking_p(shift))
        record = {
            "age": float(np.clip(rng.normal(50 + 6 * shift, 14), 1, 95)),
            "sex": str(rng.choice(["F", "M"])),
            "smoking": str(smoking),
            "crp": float(np.exp(rng.normal(1.2 + 0.8 * shift, 0.9))),
        }
        for key in record:
            if rng.random() < missing_rate:
                record[key] = None
        records.append(record)
    return records


def _smoking_p(shift: float) -> list[float]:
    weights = np.exp(np.array([-1.0, 0.0, 1.0]) * shift * 0.8)
    return list(weights / weights.sum())


def pair_by_label(
    images: np.ndarray,
    image_labels: np.ndarray,
    reports: pd.DataFrame,
    rng: np.random.Generator,
    prefix: str,
) -> tuple[list[Case], np.ndarray]:
    """Each image gets a distinct report OF THE SAME CLASS: paired by label, not by patient."""
    cases = []
    pools = {
        label: list(rng.permutation(reports.index[reports["label"] == label])) for label in (0, 1)
    }
    clinical = synthetic_clinical(image_labels, rng)
    for index, (image, label) in enumerate(zip(images, image_labels, strict=True)):
        report_row = pools[int(label)].pop()
        cases.append(
            Case(
                case_id=f"{prefix}{index:04d}",
                images=[ImageVolume(array=image.astype(np.float32), modality="CR")],
                report=str(reports.loc[report_row, "report_text"]),
                clinical=clinical[index],
            )
        )
    return cases, image_labels.astype(int)
