"""Paired significance tests between two configurations scored on the same queries.

The confidence interval is a percentile interval of the paired bootstrap (resample queries with
replacement, recompute the mean difference). The p-value (two-sided, H0: mean difference 0) is
either the bootstrap's, from the differences shifted to mean 0 (Efron & Tibshirani 1993, §16.4;
the usual IR test, Sakai 2006), or a paired randomization test that flips the sign of each query's
difference (Smucker et al. 2007). Both add one to numerator and denominator, so p is never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TIE_EPS = 1e-12
BLOCK = 1000  # resamples drawn at once: bounded memory on big query sets


@dataclass
class Comparison:
    metric: str
    baseline: str
    candidate: str
    baseline_mean: float
    candidate_mean: float
    diff: float  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float
    wins: int  # queries where the candidate scores higher
    ties: int
    losses: int
    n_queries: int
    method: str
    n_resamples: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(baseline: np.ndarray, candidate: np.ndarray, *, metric: str = "", baseline_name: str = "a",
                candidate_name: str = "b", method: str = "bootstrap", n_resamples: int = 10_000,
                confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Difference ``candidate - baseline`` of the means, its CI, p-value and wins/ties/losses."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be 1-d and the same length ({a.shape} vs {b.shape})")
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"unknown test {method!r} (bootstrap or permutation)")
    d = b - a
    n = len(d)
    observed = float(d.mean()) if n else 0.0
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(d, n_resamples, rng)
    tail = (1 - confidence) / 2
    low, high = (np.quantile(boot, [tail, 1 - tail]) if n else (0.0, 0.0))
    if method == "bootstrap":
        extreme = np.abs(boot - observed) >= abs(observed) - TIE_EPS
    else:
        extreme = np.abs(_flip_means(d, n_resamples, rng)) >= abs(observed) - TIE_EPS
    p = (int(extreme.sum()) + 1) / (n_resamples + 1)
    return Comparison(
        metric=metric, baseline=baseline_name, candidate=candidate_name,
        baseline_mean=float(a.mean()) if n else 0.0, candidate_mean=float(b.mean()) if n else 0.0,
        diff=observed, ci_low=float(low), ci_high=float(high), p_value=min(1.0, p),
        wins=int((d > TIE_EPS).sum()), ties=int((np.abs(d) <= TIE_EPS).sum()),
        losses=int((d < -TIE_EPS).sum()), n_queries=n, method=method, n_resamples=n_resamples,
        confidence=confidence,
    )


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of resamples of ``d`` drawn with replacement."""
    return _resampled_means(d, n_resamples, lambda m, n: d[rng.integers(0, n, size=(m, n))])


def _flip_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``d`` with random signs (the sign-flip randomization test)."""
    return _resampled_means(d, n_resamples, lambda m, n: (rng.integers(0, 2, size=(m, n)) * 2 - 1) * d)


def _resampled_means(d: np.ndarray, n_resamples: int, draw) -> np.ndarray:
    """``draw(m, n)`` gives m resampled rows of d; computed in blocks so memory stays bounded."""
    n = len(d)
    if n == 0:
        return np.zeros(n_resamples)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, BLOCK):
        m = min(BLOCK, n_resamples - start)
        out[start:start + m] = draw(m, n).mean(axis=1)
    return out


def bootstrap_ci(values: np.ndarray, *, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of one configuration's mean over queries (for plots and tables)."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return (0.0, 0.0)
    boot = _bootstrap_means(v, n_resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(low), float(high)
