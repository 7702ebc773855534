"""The ``fusion`` plugin: image + report + clinical fields in, one explained prediction out."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from medplug.contract import Case, Explanation, Plugin, PluginInfo, Prediction
from medplug.errors import MedplugError, MissingInputError, ModelFileError
from medplug.model_folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_safetensors,
    read_config,
    save_weights,
    write_config,
)
from medplug.registry import DECLARATION_NAME, read_declaration
from medplug_fusion.attribution import clinical_field_shapley, modality_shapley
from medplug_fusion.clinical import ClinicalPreprocessor
from medplug_fusion.config import FusionConfig
from medplug_fusion.embeddings import EmbeddingSource
from medplug_fusion.features import CaseFeaturizer
from medplug_fusion.model import FusionEnsemble, FusionInputs, FusionModel
from medplug_fusion.network import build_network

VERSION = "0.1.0"
INPUT_KIND = {"image": "image", "report": "text", "clinical": "tabular"}


class FusionPlugin(Plugin):
    """A fusion model plus the embedding plugins it was trained with."""

    name: ClassVar[str] = "fusion"

    def __init__(
        self,
        model: FusionModel,
        config: FusionConfig,
        clinical: ClinicalPreprocessor | None,
        sources: dict[str, EmbeddingSource],
        explain: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.clinical = clinical
        self.sources = sources
        self.explain = explain
        self.featurize = CaseFeaturizer(model.modalities, sources, clinical)
        self.info = self._info()
        # Masking a clinical field swaps in its "missing" columns; computed once.
        self._field_slices = clinical.field_slices() if clinical is not None else {}
        self._missing_row = clinical.missing_row() if clinical is not None else None

    # ------------------------------------------------------------------ description

    @classmethod
    def describe(cls) -> PluginInfo:
        # The static declaration next to this module, read by `medplug plugins` unimported.
        return read_declaration(Path(__file__).with_name(DECLARATION_NAME))

    def _info(self) -> PluginInfo:
        info = self.describe()
        info.task = self.config.task
        info.labels = list(self.model.labels)
        present = set(self.model.modalities)
        info.inputs = {key: spec for key, spec in info.inputs.items() if key in present}
        if "clinical" in info.inputs and self.clinical is not None:
            info.inputs["clinical"].fields = self.clinical.fields
        return info

    # ------------------------------------------------------------------ predict

    def check_case(self, case: Case) -> None:
        super().check_case(case)
        if not any(case.has(INPUT_KIND[m]) for m in self.model.modalities):
            raise MissingInputError(
                f"plugin 'fusion' needs at least one of {self.model.modalities}, "
                "the case has none of them",
                case_id=case.case_id,
            )

    def _predict(self, case: Case) -> Prediction:
        outcome = self._predict_checked([case])[0]
        if isinstance(outcome, MedplugError):
            raise outcome
        return outcome

    def predict_batch(self, cases: Sequence[Case]) -> list[Prediction]:
        """One pass through the embedding plugins and the network for the whole batch.

        A case without any usable input comes back as a failed prediction (``error``
        set), the others are predicted as usual.
        """
        outcomes: list[Prediction | MedplugError | None] = [None] * len(cases)
        usable = []
        for index, case in enumerate(cases):
            try:
                self.check_case(case)
                usable.append(index)
            except MedplugError as exc:
                outcomes[index] = exc
        if usable:
            predicted = self._predict_checked([cases[i] for i in usable])
            for index, outcome in zip(usable, predicted, strict=True):
                outcomes[index] = outcome
        return [
            self.failed_prediction(case, outcome) if isinstance(outcome, MedplugError) else outcome
            for case, outcome in zip(cases, outcomes, strict=True)
            if outcome is not None
        ]

    def _predict_checked(self, cases: list[Case]) -> list[Prediction | MedplugError]:
        """Predictions for cases that passed ``check_case``; an error where an input
        turned out unusable (every embedding plugin rejected it)."""
        featurized = self.featurize(cases)
        usable = np.flatnonzero(featurized.inputs.present.any(axis=1))
        outcomes: list[Prediction | MedplugError] = [
            MissingInputError(
                "no usable input: " + "; ".join(featurized.warnings[index]),
                case_id=case.case_id,
            )
            for index, case in enumerate(cases)
        ]
        if len(usable):
            predictions = self._predict_usable(
                [cases[i] for i in usable],
                featurized.inputs.subset(usable),
                [featurized.warnings[i] for i in usable],
            )
            for index, prediction in zip(usable, predictions, strict=True):
                outcomes[index] = prediction
        return outcomes

    def _predict_usable(
        self, cases: list[Case], inputs: FusionInputs, warnings: list[list[str]]
    ) -> list[Prediction]:
        score = self.model.score(inputs)
        embeddings = self.model.fused_embedding(inputs)
        if self.model.task == "survival":
            times = np.asarray(self.report_times(), dtype=float)
            survival = self.model.survival(inputs, times)
        else:
            probs = self.model.probabilities(inputs)
        contributions, baseline = (
            modality_shapley(self.model.score, inputs) if self.explain else (None, None)
        )
        predictions = []
        for i, case in enumerate(cases):
            outputs: dict[str, Any] = {"score": float(score[i])}
            if self.model.task == "survival":
                outputs["risk_score"] = float(score[i])
                outputs["survival_probability"] = {
                    f"{t:g}": float(s) for t, s in zip(times, survival[i], strict=True)
                }
                label, probabilities = None, {}
            else:
                probabilities = dict(zip(self.model.labels, map(float, probs[i]), strict=True))
                label = self._label(probs[i])
            explanation = None
            if contributions is not None and baseline is not None:
                outputs["baseline_score"] = float(baseline[i])
                explanation = Explanation(
                    modality_contributions=dict(
                        zip(self.model.modalities, map(float, contributions[i]), strict=True)
                    ),
                    feature_attributions=self._field_attributions(inputs, i),
                )
            predictions.append(
                Prediction(
                    plugin=self.name,
                    plugin_version=VERSION,
                    case_id=case.case_id,
                    label=label,
                    probabilities=probabilities,
                    embedding=embeddings[i],
                    explanation=explanation,
                    warnings=list(warnings[i]),
                    provenance=self._provenance(inputs.present[i]),
                    outputs=outputs,
                )
            )
        return predictions

    def _label(self, probs: np.ndarray) -> str:
        if len(probs) == 2:
            return self.model.labels[int(probs[1] >= self.model.threshold)]
        return self.model.labels[int(np.argmax(probs))]

    def _field_attributions(self, inputs: FusionInputs, index: int) -> dict[str, float] | None:
        if self.clinical is None or "clinical" not in self.model.modalities:
            return None
        assert self._missing_row is not None
        return clinical_field_shapley(
            self.model.score, inputs, self._field_slices, self._missing_row, index
        )

    def _provenance(self, present: np.ndarray) -> dict[str, Any]:
        return {
            "modalities_used": [
                m for m, p in zip(self.model.modalities, present, strict=True) if p
            ],
            "embedding_plugins": {
                m: {"plugin": s.plugin_name, "version": s.version} for m, s in self.sources.items()
            },
            "temperature": self.model.temperature,
            "threshold": self.model.threshold,
        }

    def report_times(self) -> list[float]:
        """Times at which survival probabilities are reported (config, else quartiles)."""
        if self.config.survival_times:
            return list(self.config.survival_times)
        times = self.model.baseline_times
        assert times is not None
        return [float(np.quantile(times, q)) for q in (0.25, 0.5, 0.75)]

    def embed(self, case: Case) -> np.ndarray:
        self.check_case(case)
        return self.model.fused_embedding(self.featurize([case]).inputs)[0]

    def evaluate(self, data: Path, out_dir: Path) -> dict[str, Any]:
        from medplug_fusion.evaluate import evaluate_plugin

        return evaluate_plugin(self, Path(data), Path(out_dir))

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path) -> Path:
        """Weights, clinical preprocessing and a copy of each embedding model, hash-checked."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v for k, v in self.model.network.state_dict().items()}
        if self.model.baseline_times is not None:
            tensors["baseline.times"] = torch.as_tensor(self.model.baseline_times)
            tensors["baseline.cumulative_hazard"] = torch.as_tensor(
                self.model.baseline_cumulative_hazard
            )
        hashed = [save_weights(folder, tensors)]
        if self.clinical is not None:
            hashed.append(self.clinical.save(folder))
        sources = {}
        for modality, source in self.sources.items():
            target = folder / "sources" / modality
            if source.model_dir is not None and source.model_dir.resolve() != target.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source.model_dir, target)
            hashed.append(f"sources/{modality}/{CONFIG_NAME}")
            sources[modality] = {"plugin": source.plugin_name, "dim": source.dim}
        dims = {m: int(p.shape[0]) for m, p in self._first_layers().items()}
        config = {
            "plugin": self.name,
            "plugin_version": VERSION,
            "info": self.info.to_dict(),
            "fusion_config": self.config.to_dict(),
            "modalities": self.model.modalities,
            "modality_dims": dims,
            "ensemble": len(self.model.network.members),
            "labels": self.model.labels,
            "temperature": self.model.temperature,
            "threshold": self.model.threshold,
            "clinical_fields": self.clinical.field_kinds if self.clinical else {},
            "sources": sources,
        }
        write_config(folder, config, hashed)
        return folder

    def _first_layers(self) -> dict[str, torch.Tensor]:
        member = self.model.network.members[0]
        return {m: member.projections[m][0].weight[0] for m in self.model.modalities}

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, explain: bool = True) -> FusionPlugin:
        folder = Path(model_dir)
        saved = read_config(folder, expected_plugin=cls.name)
        if not (folder / WEIGHTS_NAME).is_file():
            raise ModelFileError(f"{folder}: no {WEIGHTS_NAME}")
        tensors = load_safetensors(folder / WEIGHTS_NAME)
        config = FusionConfig.from_dict(saved["fusion_config"])
        n_outputs = 1 if config.task == "survival" else len(saved["labels"])
        # The trunk concatenates modalities in training order, so rebuild in that order.
        dims = {modality: saved["modality_dims"][modality] for modality in saved["modalities"]}
        members = [build_network(dims, n_outputs, config) for _ in range(saved["ensemble"])]
        network = FusionEnsemble(members)
        network.load_state_dict(
            {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        )
        network.eval()
        model = FusionModel(
            task=config.task,
            modalities=list(saved["modalities"]),
            network=network,
            labels=list(saved["labels"]),
            temperature=float(saved["temperature"]),
            threshold=float(saved["threshold"]),
        )
        if "baseline.times" in tensors:
            model.baseline_times = tensors["baseline.times"].numpy()
            model.baseline_cumulative_hazard = tensors["baseline.cumulative_hazard"].numpy()
        clinical = (
            ClinicalPreprocessor.load(folder, saved["clinical_fields"])
            if "clinical" in model.modalities
            else None
        )
        sources = {}
        for modality, entry in saved["sources"].items():
            source = EmbeddingSource(modality, entry["plugin"], folder / "sources" / modality)
            source.dim = entry["dim"]
            sources[modality] = source
        return cls(model, config, clinical, sources, explain=explain)
