"""``report-classifier``: the medplug plugin over a Hugging Face report model folder."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medplug.calibration import softmax_with_temperature
from medplug.contract import Case, Explanation, Plugin, PluginInfo, Prediction
from medplug.errors import DataError, MedplugError, ModelFileError
from medplug.evaluation import binary_metrics, write_report
from medplug.model_folder import (
    CONFIG_NAME,
    check_top_level_files_hashed,
    check_unverified_folder,
    read_config,
)
from medplug.phi import scrub
from medplug_text import PLUGIN_NAME, __version__
from medplug_text.attributions import token_attributions
from medplug_text.checkpoint import check_folder, load_classifier, load_config, load_tokenizer
from medplug_text.chunking import make_chunks, pool
from medplug_text.data import read_labelled_csv
from medplug_text.inference import WindowSettings, encode, forward_chunks
from medplug_text.info import plugin_info
from medplug_text.reports import DEFAULT_SECTIONS, prepare_report

log = logging.getLogger(__name__)


class ReportClassifierPlugin(Plugin):
    """Calibrated report classification with an embedding and token attributions.

    Reports are scrubbed of PHI-like patterns before tokenisation, so the
    tokens in ``explanation.token_attributions`` carry no names, dates or IDs;
    nothing derived from report text is logged.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        labels: list[str],
        temperature: float = 1.0,
        window: WindowSettings | None = None,
        sections: Sequence[str] | None = DEFAULT_SECTIONS,
        info: PluginInfo | None = None,
        model_dir: Path | None = None,
        medplug_config: dict[str, Any] | None = None,
        explain: bool = True,
        attribution_steps: int = 16,
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.temperature = float(temperature)
        self.window = window or WindowSettings()
        self.sections = tuple(sections) if sections else None
        self.info = info or plugin_info(self.labels)
        self.model_dir = model_dir
        self.medplug_config = medplug_config or {}
        self.explain = explain
        self.attribution_steps = attribution_steps
        self.batch_size = batch_size

    # ------------------------------------------------------------------ loading

    @classmethod
    def describe(cls) -> PluginInfo:
        return plugin_info()

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, allow_pickle: bool = False, **options: Any
    ) -> ReportClassifierPlugin:
        """Load a medplug report model folder, or any local HF sequence-classifier folder.

        A folder with ``medplug.json`` is hash-verified and carries its fitted
        temperature; a plain HF folder (e.g. a RadBERT already fine-tuned for
        classification) is used with its own ``id2label`` and temperature 1.
        Pickle-only weights are refused unless ``allow_pickle`` is set.
        """
        folder = Path(model_dir)
        if not folder.is_dir():
            raise ModelFileError(
                f"{folder}: report model folder not found; expected a folder written by "
                "`medplug train text` (medplug.json, config.json, tokenizer, model.safetensors)"
            )
        if (folder / CONFIG_NAME).is_file():
            config = read_config(folder, expected_plugin=PLUGIN_NAME)
            # transformers reads whatever tokenizer/config files it finds: all must be hashed.
            check_top_level_files_hashed(folder, config.get("file_sha256", {}))
            check_folder(folder, allow_pickle=False)  # medplug writes safetensors only
            model = load_classifier(folder)
            labels = list(config["labels"])
            if model.config.num_labels != len(labels):
                raise ModelFileError(
                    f"{folder}: model head has {model.config.num_labels} outputs but "
                    f"{CONFIG_NAME} lists {len(labels)} labels"
                )
            return cls(
                model,
                load_tokenizer(folder),
                labels,
                temperature=config.get("temperature", 1.0),
                window=WindowSettings(**config.get("window", {})),
                sections=config.get("sections"),
                info=PluginInfo.from_dict(config["info"]) if "info" in config else None,
                model_dir=folder,
                medplug_config=config,
                **options,
            )
        return cls._from_plain_checkpoint(folder, allow_pickle, **options)

    @classmethod
    def _from_plain_checkpoint(
        cls, folder: Path, allow_pickle: bool, **options: Any
    ) -> ReportClassifierPlugin:
        # No medplug.json: nothing to verify the weights against (deleting medplug.json
        # from a medplug folder must not be a way round its hashes).
        check_unverified_folder(folder, "this Hugging Face checkpoint")
        check_folder(folder, allow_pickle)
        hf_config = load_config(folder)
        architectures = getattr(hf_config, "architectures", None) or []
        if not any(name.endswith("ForSequenceClassification") for name in architectures):
            raise ModelFileError(
                f"{folder}: checkpoint has no sequence-classification head "
                f"(architectures {architectures}); fine-tune it first with "
                f"`medplug train text --backbone {folder}`"
            )
        model = load_classifier(folder, allow_pickle=allow_pickle)
        labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        positions = getattr(model.config, "max_position_embeddings", 512)
        max_length = min(int(positions), 512)
        return cls(
            model,
            load_tokenizer(folder),
            labels,
            window=WindowSettings(max_length=max_length, stride=max_length // 2),
            model_dir=folder,
            medplug_config={"uncalibrated": True},
            **options,
        )

    # ------------------------------------------------------------------ predicting

    def _predict(self, case: Case) -> Prediction:
        return self._predict_many([case], self.explain)[0]

    def predict_batch(self, cases: Sequence[Case]) -> list[Prediction]:
        """Many reports through the model in padded batches; a bad case gets a warning only."""
        results: list[Prediction | None] = [None] * len(cases)
        good: list[int] = []
        for index, case in enumerate(cases):
            try:
                self.check_case(case)
                good.append(index)
            except MedplugError as exc:
                results[index] = self._failed(case, exc)
        for begin in range(0, len(good), self.batch_size):
            part = good[begin : begin + self.batch_size]
            for index, prediction in zip(
                part, self._predict_many([cases[i] for i in part], self.explain), strict=True
            ):
                results[index] = prediction
        return [result for result in results if result is not None]

    def embed(self, case: Case) -> np.ndarray:
        self.check_case(case)
        embedding = self._predict_many([case], explain=False)[0].embedding
        assert embedding is not None
        return embedding

    def embed_batch(self, cases: Sequence[Case]) -> list[np.ndarray]:
        for case in cases:
            self.check_case(case)
        predictions = self._predict_many(list(cases), explain=False)
        return [p.embedding for p in predictions if p.embedding is not None]

    def _predict_many(self, cases: Sequence[Case], explain: bool) -> list[Prediction]:
        started = time.perf_counter()
        texts = [prepare_report(case.report or "", self.sections) for case in cases]
        token_ids = encode(self.tokenizer, texts)
        chunks = make_chunks(
            token_ids,
            self.tokenizer.cls_token_id,
            self.tokenizer.sep_token_id,
            self.window.max_length,
            self.window.stride,
        )
        chunk_logits, chunk_embeddings = forward_chunks(
            self.model, chunks, self.tokenizer.pad_token_id, self.batch_size
        )
        logits = pool(chunk_logits, chunks, len(cases), self.window.pooling)
        embeddings = pool(chunk_embeddings, chunks, len(cases), "mean")
        probs = softmax_with_temperature(logits, self.temperature)
        shared_s = (time.perf_counter() - started) / max(len(cases), 1)
        predictions = []
        for index, case in enumerate(cases):
            mark = time.perf_counter()
            own_chunks = [chunk for chunk in chunks if chunk.report == index]
            best = int(np.argmax(probs[index]))
            explanation = None
            if explain:
                attributions = token_attributions(
                    self.model,
                    self.tokenizer,
                    token_ids[index],
                    own_chunks,
                    best,
                    self.attribution_steps,
                )
                explanation = Explanation(token_attributions=attributions)
            predictions.append(
                Prediction(
                    plugin=self.name,
                    plugin_version=__version__,
                    case_id=case.case_id,
                    label=self.labels[best],
                    probabilities={
                        label: float(p) for label, p in zip(self.labels, probs[index], strict=True)
                    },
                    embedding=embeddings[index],
                    explanation=explanation,
                    warnings=self._warnings(len(token_ids[index]), len(own_chunks)),
                    provenance=self._provenance(len(token_ids[index]), len(own_chunks)),
                    elapsed_s=shared_s + time.perf_counter() - mark,
                )
            )
        log.debug("predicted %d reports in %.3f s", len(cases), time.perf_counter() - started)
        return predictions

    def _warnings(self, n_tokens: int, n_chunks: int) -> list[str]:
        warnings = []
        if n_chunks > 1:
            warnings.append(
                f"report has {n_tokens} tokens, more than the model window of "
                f"{self.window.max_length - 2}: read as {n_chunks} overlapping chunks "
                f"({self.window.pooling}-pooled)"
            )
        if self.medplug_config.get("uncalibrated"):
            warnings.append("probabilities are not calibrated (plain HF checkpoint)")
        return warnings

    def _provenance(self, n_tokens: int, n_chunks: int) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "backbone": self.medplug_config.get("backbone"),
            "temperature": self.temperature,
            "n_tokens": n_tokens,
            "n_chunks": n_chunks,
            "window": self.window.max_length,
            "stride": self.window.stride,
            "sections": list(self.sections) if self.sections else None,
        }

    def _failed(self, case: Case, error: MedplugError) -> Prediction:
        """The contract's failed Prediction, its messages PHI-scrubbed for good measure."""
        prediction = self.failed_prediction(case, error)
        prediction.warnings = [scrub(warning) for warning in prediction.warnings]
        if prediction.error is not None:
            prediction.error = {key: scrub(value) for key, value in prediction.error.items()}
        return prediction

    # ------------------------------------------------------------------ evaluating

    def evaluate(self, data: Path, out_dir: Path) -> dict[str, Any]:
        """Score on a labelled CSV (the text and label columns used in training)."""
        columns = self.medplug_config.get("data", {})
        text_col = columns.get("text_col", "report_text")
        label_col = columns.get("label_col", "label")
        reports = read_labelled_csv(data, text_col, label_col)
        values = [str(v) for v in columns.get("label_values", self.labels)]
        unknown = sorted(set(reports.labels) - set(values))
        if unknown:
            raise DataError(f"{data}: labels {unknown[:5]} are not among the model's {values}")
        truth = np.array([values.index(label) for label in reports.labels])
        cases = [
            Case(case_id=f"row{row}", report=text)
            for row, text in zip(reports.rows, reports.texts, strict=True)
        ]
        predictions = []
        for begin in range(0, len(cases), self.batch_size):
            predictions += self._predict_many(cases[begin : begin + self.batch_size], False)
        probs = np.array([[p.probabilities[label] for label in self.labels] for p in predictions])
        if len(self.labels) == 2 and len(set(truth.tolist())) == 2:
            metrics = binary_metrics(truth, probs[:, 1])
            metrics["positive_label"] = self.labels[1]
            metrics["skipped_rows"] = len(reports.skipped_rows)
            write_report(out_dir, truth, probs[:, 1], metrics)
            return metrics
        metrics = {
            "n": int(len(truth)),
            "accuracy": float((probs.argmax(1) == truth).mean()),
            "skipped_rows": len(reports.skipped_rows),
        }
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
