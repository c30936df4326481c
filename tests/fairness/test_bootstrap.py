"""fairness.bootstrap: coverage on a simple case, reproducible from its seed, the same draws
as scipy, vectorised = per resample, batching does not change the draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from fairness.bootstrap import bootstrap_ci, bootstrap_draws


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def test_ci_covers_the_true_mean_and_is_reproducible():
    x = np.random.default_rng(0).normal(5.0, 1.0, 200)
    low, high = bootstrap_ci(_mean, x, n_resamples=2000, seed=7, vectorized=True)
    assert low < 5.0 < high and high - low < 0.4  # about 4 standard errors wide
    assert bootstrap_ci(_mean, x, n_resamples=2000, seed=7, vectorized=True) == (low, high)
    assert bootstrap_ci(_mean, x, n_resamples=2000, seed=8, vectorized=True) != (low, high)


def test_coverage_is_near_the_nominal_level():
    """95% percentile intervals of a Bernoulli(0.3) mean (n = 200) cover 0.3 about 95% of
    the time (binomial sd of the coverage over 200 data sets: 1.5 points)."""
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        x = (rng.random(200) < 0.3).astype(float)
        low, high = bootstrap_ci(_mean, x, n_resamples=500, seed=i, vectorized=True)
        hits += low <= 0.3 <= high
    assert 0.89 <= hits / 200 <= 0.99


def test_unpaired_draws_equal_scipy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(10, 1, 7), rng.normal(9, 1, 5)

    def ratio(a, b, axis=-1):
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)

    ours = bootstrap_ci(ratio, x, y, n_resamples=999, seed=2, paired=False, vectorized=True,
                        nan_policy="propagate")
    ref = sps.bootstrap((x, y), ratio, n_resamples=999, method="percentile", paired=False,
                        random_state=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_paired_mapping_statistic_vectorised_equals_per_resample_and_batches():
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 2, 60), rng.integers(0, 2, 60)

    def stat(a, b):
        return {"acc": np.mean(a == b, axis=-1), "rate": np.mean(b, axis=-1)}

    loop = bootstrap_draws(stat, y, p, n_resamples=50, seed=5)
    vec = bootstrap_draws(stat, y, p, n_resamples=50, seed=5, vectorized=True)
    small = bootstrap_draws(stat, y, p, n_resamples=50, seed=5, vectorized=True, batch=7)
    for k in ("acc", "rate"):
        np.testing.assert_array_equal(loop[k], vec[k])
        np.testing.assert_array_equal(loop[k], small[k])
    # paired: the two columns are resampled together (same rows)
    same = bootstrap_draws(lambda a, b: float(np.all(a == b)), y, y, n_resamples=20, seed=0)
    assert (same == 1.0).all()


def test_undefined_draws_are_omitted_or_propagated():
    x = np.arange(20.0)

    def sometimes(a):
        return {"always": float(a.mean()), "rarely": float(a.mean()) if a[0] > 17 else math.nan}

    cis = bootstrap_ci(sometimes, x, n_resamples=100, seed=0)
    assert set(cis) == {"always"}  # undefined in most resamples: no interval
    assert set(bootstrap_ci(sometimes, x, n_resamples=100, seed=0, min_valid=1)) == {
        "always", "rarely"}
    nan_ci = bootstrap_ci(lambda a: math.nan if a[0] > 17 else 1.0, x, n_resamples=100,
                          nan_policy="propagate")
    assert all(math.isnan(v) for v in nan_ci)
