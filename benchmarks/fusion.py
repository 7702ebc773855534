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
import os
import platform
import sys
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="survival,generated,semisynthetic")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    data_root = shared_data()
    WORK.mkdir(parents=True, exist_ok=True)
    wanted = args.only.split(",")
    sections = {
        "survival": lambda: bench_survival(data_root),
    }
    body: list[str] = []
    started = time.perf_counter()
    for key in wanted:
        body += sections[key]()
    header = [
        "# Fusion benchmarks",
        "",
        f"Machine: {machine()}. Run with `make bench-fusion` "
        f"({time.perf_counter() - started:.0f} s in all).",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(header + body))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
