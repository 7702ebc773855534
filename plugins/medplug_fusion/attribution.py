"""Explanations: exact Shapley values over modalities and over clinical fields.

A "player" absent from a coalition is masked the way the model was trained to
see absence: a modality by its missing indicator, a clinical field by its
imputed value. With three modalities an exact Shapley value needs only the
eight coalitions, evaluated in one batch; the values sum exactly to the
prediction minus the all-masked baseline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from medplug_fusion.model import FusionInputs

MAX_EXACT_FIELDS = 8


def shapley_from_values(players: int, value: dict[frozenset[int], float]) -> np.ndarray:
    """Exact Shapley values from the value of every coalition."""
    phi = np.zeros(players)
    for player in range(players):
        others = [p for p in range(players) if p != player]
        for size in range(players):
            weight = math.factorial(size) * math.factorial(players - size - 1)
            weight /= math.factorial(players)
            for coalition in itertools.combinations(others, size):
                base = frozenset(coalition)
                phi[player] += weight * (value[base | {player}] - value[base])
    return phi


def modality_shapley(
    score: Callable[[FusionInputs], np.ndarray], inputs: FusionInputs
) -> tuple[np.ndarray, np.ndarray]:
    """Per case, each modality's Shapley contribution and the all-masked baseline.

    Modalities a case lacks are masked in every coalition, so their value is 0.
    """
    n, m = inputs.present.shape
    coalitions = [
        frozenset(c) for size in range(m + 1) for c in itertools.combinations(range(m), size)
    ]
    rows, present_rows = [], []
    for coalition in coalitions:
        mask = np.zeros(m, dtype=np.float32)
        mask[list(coalition)] = 1.0
        rows.append(np.arange(n))
        present_rows.append(inputs.present * mask)
    stacked = inputs.subset(np.concatenate(rows)).with_present(np.concatenate(present_rows))
    scores = score(stacked).reshape(len(coalitions), n)
    contributions = np.zeros((n, m))
    for case in range(n):
        value = {c: float(scores[k, case]) for k, c in enumerate(coalitions)}
        contributions[case] = shapley_from_values(m, value)
    return contributions, scores[0]


def clinical_field_shapley(
    score: Callable[[FusionInputs], np.ndarray],
    inputs: FusionInputs,
    field_slices: dict[str, slice],
    missing_row: np.ndarray,
    case: int,
    rng_seed: int = 0,
    permutations: int = 64,
) -> dict[str, float]:
    """Shapley value of each clinical field for one case, other modalities as given.

    A field outside the coalition takes its imputed (missing) value; the empty
    coalition is the clinical modality masked. The values sum to the prediction
    minus the prediction without clinical fields. Exact up to ``MAX_EXACT_FIELDS``
    fields, Monte-Carlo over ``permutations`` orderings beyond.
    """
    column = inputs.modalities.index("clinical")
    one = inputs.subset(np.array([case]))
    if not one.present[0, column]:
        return {}
    names = list(field_slices)
    full = one.features["clinical"][0]

    def batch_for(coalitions: list[frozenset[int]]) -> np.ndarray:
        rows = np.repeat(one.features["clinical"], len(coalitions), axis=0).copy()
        present = np.repeat(one.present, len(coalitions), axis=0).copy()
        for r, coalition in enumerate(coalitions):
            rows[r] = missing_row
            for player in coalition:
                rows[r, field_slices[names[player]]] = full[field_slices[names[player]]]
            present[r, column] = 1.0 if coalition else 0.0
        features = {k: np.repeat(v, len(coalitions), axis=0) for k, v in one.features.items()}
        features["clinical"] = rows
        return score(FusionInputs(features, present, list(one.modalities)))

    k = len(names)
    if k <= MAX_EXACT_FIELDS:
        coalitions = [
            frozenset(c) for size in range(k + 1) for c in itertools.combinations(range(k), size)
        ]
        values = batch_for(coalitions)
        phi = shapley_from_values(k, dict(zip(coalitions, map(float, values), strict=True)))
        return dict(zip(names, map(float, phi), strict=True))
    rng = np.random.default_rng(rng_seed)
    phi = np.zeros(k)
    for _ in range(permutations):
        order = rng.permutation(k)
        chain = [frozenset(order[:i].tolist()) for i in range(k + 1)]
        values = batch_for(chain)
        phi[order] += np.diff(values)
    return dict(zip(names, map(float, phi / permutations), strict=True))
