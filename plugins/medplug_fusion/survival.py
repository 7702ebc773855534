"""Cox proportional-hazards head: partial-likelihood loss and Breslow baseline hazard.

The network outputs a log-risk score f(x); the loss is the negative Cox partial
log-likelihood with Breslow's handling of tied times (every subject whose time
is >= t is at risk at t). After training, the Breslow estimator of the
cumulative baseline hazard H0 turns scores into survival probabilities:
S(t | x) = exp(-H0(t) * exp(f(x))).
"""

from __future__ import annotations

import numpy as np
import torch

from medplug.errors import DataError


def check_survival_targets(durations: np.ndarray, events: np.ndarray) -> None:
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=float)
    if not np.isfinite(durations).all() or (durations < 0).any():
        raise DataError("survival durations must be finite and >= 0")
    if not np.isin(events, (0.0, 1.0)).all():
        raise DataError("survival events must be 0 (censored) or 1 (event)")
    if events.sum() < 2:
        raise DataError("survival training needs at least two observed events")


def cox_partial_likelihood(
    log_risk: torch.Tensor, durations: torch.Tensor, events: torch.Tensor
) -> torch.Tensor:
    """Mean negative Cox partial log-likelihood over events (Breslow ties)."""
    log_risk = log_risk.reshape(-1)
    order = torch.argsort(durations, descending=True)
    log_risk, durations, events = log_risk[order], durations[order], events[order]
    log_cumsum = torch.logcumsumexp(log_risk, dim=0)
    # With times sorted descending, the risk set of subject i runs up to the last
    # subject tied with i; take the cumulative sum there so ties share one risk set.
    last_tied = torch.searchsorted(-durations, -durations, right=True) - 1
    log_denominator = log_cumsum[last_tied]
    n_events = events.sum().clamp_min(1.0)
    return -((log_risk - log_denominator) * events).sum() / n_events


def breslow_baseline(
    log_risk: np.ndarray, durations: np.ndarray, events: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Event times and the cumulative baseline hazard H0 at each of them."""
    log_risk = np.asarray(log_risk, dtype=np.float64).reshape(-1)
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    events = np.asarray(events, dtype=np.float64).reshape(-1)
    shift = log_risk.max()
    risk = np.exp(log_risk - shift)
    times = np.unique(durations[events > 0])
    order = np.argsort(durations)
    sorted_durations = durations[order]
    # Sum of risk over subjects with duration >= t, for each event time t.
    at_risk_sum = np.cumsum(risk[order][::-1])[::-1]
    first_at_risk = np.searchsorted(sorted_durations, times, side="left")
    denominators = at_risk_sum[first_at_risk] * np.exp(shift)
    deaths = np.array([events[durations == t].sum() for t in times])
    return times, np.cumsum(deaths / denominators)


def survival_probability(
    log_risk: np.ndarray, times: np.ndarray, cumulative_hazard: np.ndarray, at: np.ndarray
) -> np.ndarray:
    """S(t | x) for each subject (rows) and each requested time ``at`` (columns)."""
    at = np.asarray(at, dtype=np.float64).reshape(-1)
    index = np.searchsorted(times, at, side="right") - 1
    hazard_at = np.where(index >= 0, cumulative_hazard[np.clip(index, 0, None)], 0.0)
    risk = np.exp(np.asarray(log_risk, dtype=np.float64).reshape(-1, 1))
    return np.exp(-hazard_at[None, :] * risk)


def concordance(durations: np.ndarray, log_risk: np.ndarray, events: np.ndarray) -> float:
    """Harrell's C-index (higher risk should mean earlier event)."""
    from lifelines.utils import concordance_index

    return float(concordance_index(durations, -np.asarray(log_risk).reshape(-1), events))
