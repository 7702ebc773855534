"""Embedding sources: any registered plugin that implements ``embed``, found by name.

Fusion never imports another plugin's module; it asks the registry for the
plugin by name and calls the contract's ``embed_batch``. A case that lacks the
input, or whose input the plugin rejects, comes back as "absent" with a reason,
so the fusion model falls back on its missing-modality indicator.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from medplug.contract import Case, Plugin, embedding_key_for
from medplug.errors import MedplugError, ModelFileError, PluginError
from medplug.model_folder import CONFIG_NAME
from medplug.registry import default_model_dir, load_plugin, model_identity

INPUT_KIND = {"image": "image", "report": "text"}
WHAT_IS_MISSING = {"image": "no image", "report": "no report"}


@dataclass
class EmbeddedBatch:
    """Embeddings of one modality for a batch: rows of zeros where absent."""

    values: np.ndarray  # (n, dim) float32
    present: np.ndarray  # (n,) bool
    reasons: list[str | None]  # why a row is absent (no PHI), None where present


class EmbeddingSource:
    """One modality's embeddings, produced by the plugin registered as ``plugin_name``."""

    def __init__(self, modality: str, plugin_name: str, model_dir: str | Path | None) -> None:
        if modality not in INPUT_KIND:
            raise PluginError(f"fusion has no embedding modality {modality!r}")
        self.modality = modality
        self.plugin_name = plugin_name
        # Resolved now so the fusion model folder can copy exactly what it was trained with.
        self.model_dir = (
            Path(model_dir) if model_dir is not None else default_model_dir(plugin_name)
        )
        if not (self.model_dir / CONFIG_NAME).is_file():  # fail at load time, not mid-batch
            raise ModelFileError(
                f"{plugin_name} (fusion's {modality} embeddings): no model folder at "
                f"{self.model_dir} (no {CONFIG_NAME})"
            )
        self.embedding_key = embedding_key_for(plugin_name, model_identity(self.model_dir))
        self._plugin: Plugin | None = None
        self._loading = threading.Lock()
        self.dim: int | None = None

    @property
    def plugin(self) -> Plugin:
        """Loaded on first use: a pipeline that hands fusion the embeddings never needs it.

        (``medplug batch`` runs the image and report plugins first; loading their
        models a second time inside fusion cost about 1 s and their memory.)
        """
        with self._loading:
            if self._plugin is None:
                self._plugin = load_plugin(self.plugin_name, self.model_dir)
            return self._plugin

    @cached_property
    def version(self) -> str:
        """The embedding plugin's version as its model folder records it (else as loaded)."""
        saved = json.loads((self.model_dir / CONFIG_NAME).read_text())
        recorded = (saved.get("info") or {}).get("version") or saved.get("plugin_version")
        return str(recorded) if recorded else self.plugin.info.version

    def embed(self, cases: Sequence[Case]) -> EmbeddedBatch:
        kind = INPUT_KIND[self.modality]
        vectors: list[np.ndarray | None] = [None] * len(cases)
        reasons: list[str | None] = [WHAT_IS_MISSING[self.modality]] * len(cases)
        usable = [i for i, case in enumerate(cases) if case.has(kind)]
        for index, vector in zip(
            usable, self._embed_usable([cases[i] for i in usable]), strict=True
        ):
            if isinstance(vector, str):
                reasons[index] = vector
                continue
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if self.dim is not None and vector.shape[0] != self.dim:
                reasons[index] = (
                    f"{self.plugin_name} embedding has length {vector.shape[0]}, "
                    f"the fusion model was trained on {self.dim}"
                )
            elif not np.isfinite(vector).all():
                reasons[index] = f"{self.plugin_name} returned a non-finite embedding"
            else:
                vectors[index] = vector
                reasons[index] = None
        if self.dim is None:
            lengths = {v.shape[0] for v in vectors if v is not None}
            if len(lengths) > 1:
                raise PluginError(f"{self.plugin_name} returned embeddings of lengths {lengths}")
            if not lengths:
                raise PluginError(f"{self.plugin_name} embedded none of {len(cases)} cases")
            self.dim = lengths.pop()
        values = np.zeros((len(cases), self.dim), dtype=np.float32)
        present = np.zeros(len(cases), dtype=bool)
        for index, vector in enumerate(vectors):
            if vector is not None:
                values[index] = vector
                present[index] = True
        return EmbeddedBatch(values, present, reasons)

    def _embed_usable(self, cases: list[Case]) -> list[np.ndarray | str]:
        """Reuse embeddings the same model already gave (``Case.embeddings``), compute the rest."""
        key = self.embedding_key
        known: list[np.ndarray | str | None] = [
            case.embeddings.get(key) if key else None for case in cases
        ]
        todo = [i for i, value in enumerate(known) if value is None]
        for index, value in zip(todo, self._compute([cases[i] for i in todo]), strict=True):
            known[index] = value
        return known  # type: ignore[return-value]

    def _compute(self, cases: list[Case]) -> list[np.ndarray | str]:
        """Batch first; if the batch fails, case by case so one bad input stays one gap."""
        if not cases:
            return []
        try:
            return list(self.plugin.embed_batch(cases))
        except MedplugError:
            pass
        results: list[np.ndarray | str] = []
        for case in cases:
            try:
                results.append(self.plugin.embed(case))
            except MedplugError as exc:
                results.append(
                    f"{self.plugin_name} could not use the {self.modality}: {type(exc).__name__}"
                )
        return results
