"""Fusion benchmarks (``make bench-fusion``); results in ``benchmarks/results/fusion.md``.

1. Survival: the fusion plugin's Cox head (clinical fields only) vs lifelines'
   CoxPHFitter on the DeepSurv train/test splits of GBSG, METABRIC and SUPPORT.
2. Generated cohort (``medplug.sampledata``): fused AUC vs each single modality
   and vs late fusion, then with each modality removed at test time.
3. Semi-synthetic real cohort: PneumoniaMNIST images paired BY LABEL (not by
   patient) with IU X-ray reports, plus generated clinical fields.

Run ``python benchmarks/fusion.py [--only survival,generated,semisynthetic]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import fusion_cohorts as cohorts
import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "fusion.md"
WORK = REPO / "benchmarks" / "work" / "fusion"


def shared_data() -> Path:
    """``$MEDPLUG_SHARED_DATA``, else ``<repo>/../shared/data``, else ``/work/shared/data``."""
    candidates = [os.environ.get("MEDPLUG_SHARED_DATA"), REPO.parent / "shared" / "data"]
    candidates += [REPO.parents[1] / "shared" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "survival").is_dir():
            return Path(candidate)
    sys.exit("shared data not found: set MEDPLUG_SHARED_DATA")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} (CPU build)"


# --------------------------------------------------------------------------- 1. survival

SURVIVAL_SETS = ("gbsg", "metabric", "support")
SURVIVAL_SEEDS = (0, 1, 2)


def survival_config(seed: int):
    from medplug_fusion.config import FusionConfig

    return FusionConfig(
        task="survival",
        batch_size=256,
        hidden_dim=64,
        projection_dim=32,
        dropout=0.2,
        weight_decay=1e-3,
        learning_rate=1e-3,
        patience=20,
        ensemble=5,
        seed=seed,
    )


def survival_cases(frame: pd.DataFrame, name: str, columns: list[str]) -> list:
    from medplug.contract import Case

    return [
        Case(case_id=f"{name}-{i}", clinical={c: float(row[c]) for c in columns})
        for i, row in frame.iterrows()
    ]


def bench_survival(data_root: Path) -> list[str]:
    from lifelines import CoxPHFitter

    from medplug_fusion.fit import fit_fusion
    from medplug_fusion.survival import concordance

    lines = [
        "## 1. Survival: Cox head vs lifelines CoxPH (same DeepSurv train/test split)",
        "",
        "Fusion plugin with clinical fields only (the `x*` columns, all numeric), ensemble of 5 "
        f"MLPs, seeds {list(SURVIVAL_SEEDS)}; CoxPH is deterministic. Harrell's C-index on the "
        "test split.",
        "",
        "| cohort | train / test | CoxPH C-index | fusion C-index per seed | fusion mean | "
        "fusion / CoxPH | fit time CoxPH / fusion (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SURVIVAL_SETS:
        train = pd.read_csv(data_root / "survival" / f"{name}_train.csv")
        test = pd.read_csv(data_root / "survival" / f"{name}_test.csv")
        columns = [c for c in train.columns if c.startswith("x")]
        started = time.perf_counter()
        cox = CoxPHFitter().fit(train, "duration", "event")
        cox_time = time.perf_counter() - started
        cox_c = concordance(
            test["duration"].to_numpy(),
            cox.predict_log_partial_hazard(test).to_numpy(),
            test["event"].to_numpy(),
        )

        train_cases = survival_cases(train, name, columns)
        test_cases = survival_cases(test, name, columns)
        scores, times = [], []
        for seed in SURVIVAL_SEEDS:
            config = survival_config(seed)
            config.clinical_fields = {c: "numeric" for c in columns}
            started = time.perf_counter()
            plugin = fit_fusion(
                train_cases,
                config,
                durations=train["duration"].to_numpy(),
                events=train["event"].to_numpy(),
            )
            times.append(time.perf_counter() - started)
            log_risk = plugin.model.raw(plugin.featurize(test_cases).inputs)
            scores.append(
                concordance(test["duration"].to_numpy(), log_risk, test["event"].to_numpy())
            )
            print(f"survival {name} seed {seed}: {scores[-1]:.4f} (CoxPH {cox_c:.4f})", flush=True)
        mean = float(np.mean(scores))
        lines.append(
            f"| {name} | {len(train)} / {len(test)} | {cox_c:.4f} | "
            + ", ".join(f"{s:.4f}" for s in scores)
            + f" | **{mean:.4f}** | {mean / cox_c:.3f} | {cox_time:.1f} / {np.mean(times):.1f} |"
        )
    return lines + [""]


# --------------------------------------------------------------------------- 2./3. cohorts

GENERATED_SIZES = {"plugins": 160, "fusion": 240, "test": 240}
# Each modality carries only part of the signal: faint, sometimes occult lesions; reports
# that agree with the label 75% of the time; a moderate clinical effect.
GENERATED_OPTIONS = {
    "lesion_contrast_hu": 120.0,
    "lesion_visible_prob": 0.75,
    "report_agreement": 0.75,
    "clinical_signal": 0.7,
    "missing_rate": 0.1,
}


def fusion_models(cases, labels, image_dir: Path, report_dir: Path, label_names: list[str]):
    """The fused model and a clinical-only model, both trained on the same cases."""
    from medplug_fusion.config import FusionConfig, SourceConfig
    from medplug_fusion.fit import fit_fusion

    config = FusionConfig(task="classification", labels=label_names, ensemble=3, seed=0)
    config.image = SourceConfig(cohorts.IMAGE_PLUGIN, str(image_dir))
    config.report = SourceConfig(cohorts.REPORT_PLUGIN, str(report_dir))
    started = time.perf_counter()
    fused = fit_fusion(cases, config, labels=labels)
    fit_seconds = time.perf_counter() - started
    clinical_config = FusionConfig(task="classification", labels=label_names, ensemble=3)
    clinical_only = fit_fusion(cases, clinical_config, labels=labels)
    return fused, clinical_only, fit_seconds


def bench_generated() -> list[str]:
    from medplug.registry import load_plugin
    from medplug_fusion.manifest import read_manifest

    work = WORK / "generated"
    work.mkdir(parents=True, exist_ok=True)
    folders = cohorts.generated_cohorts(work, GENERATED_SIZES, GENERATED_OPTIONS)
    manifest = str(folders["plugins"] / "manifest.csv")
    image_dir = cohorts.train_with_cli(
        ["image", "--data", manifest, "--config", "demo", "--image-column", "nifti"],
        work / "image-model",
        work / "image-train.log",
    )
    report_dir = cohorts.train_with_cli(
        [
            "text",
            "--data",
            manifest,
            "--text-col",
            "report_text",
            "--label-col",
            "label",
            "--preset",
            "demo",
            "--label-names",
            "no_lesion,lesion",
        ],
        work / "report-model",
        work / "report-train.log",
    )
    train = read_manifest(folders["fusion"] / "manifest.csv", image_columns=("nifti",))
    test = read_manifest(folders["test"] / "manifest.csv", image_columns=("nifti",))
    fused, clinical_only, fit_seconds = fusion_models(
        train.cases, train.labels, image_dir, report_dir, ["no_lesion", "lesion"]
    )
    image = load_plugin(cohorts.IMAGE_PLUGIN, image_dir)
    report = load_plugin(cohorts.REPORT_PLUGIN, report_dir)
    options = ", ".join(f"`{k}={v}`" for k, v in GENERATED_OPTIONS.items())
    lines = [
        "## 2. Generated cohort (`medplug.sampledata`)",
        "",
        f"Options {options}: each modality carries only part of the signal. Three disjoint "
        f"cohorts: {GENERATED_SIZES['plugins']} cases train the image and report plugins "
        "(their own `medplug train image --config demo` / `medplug train text --preset demo`), "
        f"{GENERATED_SIZES['fusion']} train the fusion model ({fit_seconds:.0f} s, embeddings "
        f"through the registry), {GENERATED_SIZES['test']} are the test set. Images read from "
        "the NIfTI copies.",
        "",
    ]
    return lines + cohorts.comparison_table(
        test.labels, test.cases, image, report, clinical_only, fused
    )


def single_network_config(name: str) -> dict:
    """A shipped image config with one network: the figures below were made that way, and
    a seed ensemble's embedding (members concatenated) would be several times wider."""
    from medplug_image.config import resolve_config

    config = resolve_config(name).to_dict()
    config["ensemble"] = 1
    return config


def bench_semisynthetic(data_root: Path) -> list[str]:
    from medplug.registry import load_plugin

    work = WORK / "semisynthetic"
    work.mkdir(parents=True, exist_ok=True)
    npz_path = data_root / "medmnist" / "pneumoniamnist.npz"
    npz = np.load(npz_path)
    reports = cohorts.iu_reports(data_root / "iu_xray" / "indiana_reports_dev.csv")
    rng = np.random.default_rng(0)
    # Reports: 40% of each class train the report plugin, the rest are paired with images.
    order = rng.permutation(len(reports))
    shuffled = reports.iloc[order]
    text_train = pd.concat(
        [part.iloc[: int(0.4 * len(part))] for _, part in shuffled.groupby("label")]
    )
    pairing_pool = reports.drop(index=text_train.index)
    text_csv = work / "iu_text_train.csv"
    text_train.to_csv(text_csv, index=False)
    image_config = work / "pneumoniamnist-single.json"
    image_config.write_text(json.dumps(single_network_config("pneumoniamnist")))
    image_dir = cohorts.train_with_cli(
        ["image", "--data", str(npz_path), "--config", str(image_config)],
        work / "image-model",
        work / "image-train.log",
    )
    report_dir = cohorts.train_with_cli(
        [
            "text",
            "--data",
            str(text_csv),
            "--text-col",
            "report_text",
            "--label-col",
            "label",
            "--label-names",
            "normal,abnormal",
        ],
        work / "report-model",
        work / "report-train.log",
    )
    # Fusion trains on the official val split, is tested on the official test split.
    val_labels = npz["val_labels"].reshape(-1)
    test_labels = npz["test_labels"].reshape(-1)
    train_cases, train_labels = cohorts.pair_by_label(
        npz["val_images"], val_labels, pairing_pool, rng, "val"
    )
    used = {case.report for case in train_cases}
    test_pool = pairing_pool[~pairing_pool["report_text"].isin(used)]
    test_cases, labels = cohorts.pair_by_label(
        npz["test_images"], test_labels, test_pool, rng, "test"
    )
    fused, clinical_only, fit_seconds = fusion_models(
        train_cases, train_labels, image_dir, report_dir, ["normal", "pneumonia"]
    )
    image = load_plugin(cohorts.IMAGE_PLUGIN, image_dir)
    report = load_plugin(cohorts.REPORT_PLUGIN, report_dir)
    lines = [
        "## 3. Semi-synthetic real cohort: PneumoniaMNIST images + IU X-ray reports",
        "",
        "**The pairing is by label, not by patient.** Each real PneumoniaMNIST image "
        "(paediatric chest X-ray, 28x28) is given a distinct real IU X-ray report (adult "
        "chest X-ray) of the same class: normal images get reports whose `Problems` is "
        "exactly `normal`, pneumonia images get abnormal reports. The clinical fields (age, "
        "sex, smoking, CRP) are generated, with part of the label signal and 10% missing. "
        "So image and report errors are independent given the label, which real paired "
        "data would not guarantee: read the fused gain as an upper bound.",
        "",
        f"Image plugin: trained on the PneumoniaMNIST train split (`--config pneumoniamnist` "
        f"with one network instead of its seed ensemble). "
        f"Report plugin: trained on {len(text_train)} IU reports (40% of each class) not used "
        f"in pairing. Fusion: trained on the {len(train_cases)} official validation images "
        f"({fit_seconds:.0f} s), tested on the {len(test_cases)} official test images.",
        "",
    ]
    return lines + cohorts.comparison_table(labels, test_cases, image, report, clinical_only, fused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="survival,generated,semisynthetic")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny MLPs: threads only add contention on a shared box
    data_root = shared_data()
    WORK.mkdir(parents=True, exist_ok=True)
    wanted = [key for key in args.only.split(",") if key]  # "" just rebuilds the table
    sections = {
        "survival": lambda: bench_survival(data_root),
        "generated": bench_generated,
        "semisynthetic": lambda: bench_semisynthetic(data_root),
    }
    for key in wanted:
        started = time.perf_counter()
        lines = sections[key]()
        lines.append(
            f"_Section run {time.strftime('%Y-%m-%d')} in {time.perf_counter() - started:.0f} s._"
        )
        (WORK / f"section-{key}.md").write_text("\n".join(lines) + "\n\n")
    # Sections are kept separately so `--only X` refreshes X and keeps the others.
    body = [
        (WORK / f"section-{key}.md").read_text()
        for key in sections
        if (WORK / f"section-{key}.md").is_file()
    ]
    header = [
        "# Fusion benchmarks\n",
        f"Machine: {machine()}; the CPUs were shared with other jobs, so times are indicative. "
        "Run with `make bench-fusion` (`python benchmarks/fusion.py --only survival` "
        "refreshes one section).\n",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(header) + "\n" + "".join(body))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
