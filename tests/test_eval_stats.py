"""eval's paired tests: identical runs, clearly different runs, and the bootstrap's CI."""

from __future__ import annotations

import numpy as np
import pytest

from arrowsmith.commands.evaluate.stats import bootstrap_ci, paired_test


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_identical_runs_differ_by_zero_with_p_one(method):
    a = np.random.default_rng(0).random(200)
    c = paired_test(a, a.copy(), method=method, n_resamples=2000)
    assert (c.diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (c.wins, c.ties, c.losses) == (0, 200, 0)


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_clearly_better_run_has_a_tiny_p_value(method):
    rng = np.random.default_rng(1)
    a = rng.random(150) * 0.5
    b = a + 0.1 + rng.normal(0, 0.05, 150)
    c = paired_test(a, b, method=method, n_resamples=5000, baseline_name="a", candidate_name="b")
    assert c.diff == pytest.approx(float((b - a).mean()))
    assert 0.08 < c.ci_low < c.diff < c.ci_high < 0.12
    assert c.p_value == pytest.approx(1 / 5001)  # no resample as extreme: the smallest p possible
    assert c.wins + c.ties + c.losses == 150 and c.wins > 140


def test_noise_only_difference_is_not_significant():
    rng = np.random.default_rng(2)
    a = rng.random(300)
    b = a + rng.normal(0, 0.1, 300)
    b -= (b - a).mean()  # exactly no mean difference
    c = paired_test(a, b, n_resamples=4000)
    assert c.ci_low < 0 < c.ci_high
    assert c.p_value > 0.9


def test_results_are_reproducible_with_the_seed():
    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50)
    assert paired_test(a, b, seed=7, n_resamples=1000) == paired_test(a, b, seed=7, n_resamples=1000)


def test_bootstrap_ci_of_a_mean_brackets_it():
    v = np.random.default_rng(4).random(500)
    lo, hi = bootstrap_ci(v, n_resamples=3000)
    assert lo < v.mean() < hi
    # the percentile interval is close to ±1.96 standard errors
    se = v.std(ddof=1) / np.sqrt(len(v))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        paired_test(np.zeros(3), np.zeros(4))
