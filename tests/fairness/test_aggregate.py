"""fairness.aggregate: each aggregator on hand-computed values, NaN groups, batch axes."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from fairness import aggregate as A

V = [0.2, 0.5, 0.8, np.nan]  # the NaN group (no rows, or undefined) is left out


def test_hand_computed_values():
    assert A.difference(V) == pytest.approx(0.6)
    assert A.ratio(V) == pytest.approx(0.25)
    assert A.group_min(V) == 0.2 and A.group_max(V) == 0.8
    assert A.std(V) == pytest.approx(0.3)  # sample std: sqrt((0.09 + 0 + 0.09) / 2)
    assert A.std(V, ddof=0) == pytest.approx(math.sqrt(0.06))
    assert A.max_deviation(V, 0.4) == pytest.approx(0.4)  # |0.8 - 0.4|
    assert A.coefficient_of_variation(V) == pytest.approx(math.sqrt(0.06) / 0.5)
    assert A.equity_scaled(0.6, V) == pytest.approx(0.6 / 1.3)
    assert A.as_score(0.25) == 0.75


def test_against_the_standard_library_on_random_values():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.random(int(rng.integers(2, 12)))
        assert A.std(v) == pytest.approx(statistics.stdev(v), abs=1e-12)
        assert A.coefficient_of_variation(v) == pytest.approx(
            statistics.pstdev(v) / statistics.fmean(v), abs=1e-12)
        assert A.difference(v) == pytest.approx(max(v) - min(v), abs=1e-15)
        assert A.ratio(v) == pytest.approx(min(v) / max(v), abs=1e-15)


def test_undefined_cases():
    for fn in (A.difference, A.ratio, A.std, A.coefficient_of_variation):
        assert math.isnan(fn([0.3, np.nan]))  # fewer than two defined groups
        assert math.isnan(fn([]))
    assert A.difference([0.3], min_groups=1) == 0.0  # fairlearn: one group, no difference
    assert math.isnan(A.group_max([np.nan, np.nan]))
    assert math.isnan(A.max_deviation([], 0.5)) and math.isnan(A.max_deviation([0.2], np.nan))
    assert math.isnan(A.coefficient_of_variation([0.0, 0.0]))  # mean <= 0
    assert math.isnan(A.equity_scaled(0.7, [0.5]))
    assert A.as_score(float("nan")) == 1.0  # nothing to compare: no measured unfairness


def test_batch_axes_reduce_the_last_axis_row_by_row():
    rng = np.random.default_rng(1)
    v = rng.random((5, 3, 4))
    v[0, 0, :3] = np.nan
    overall = rng.random((5, 3))
    for fn in (A.difference, A.ratio, A.group_min, A.group_max, A.std,
               A.coefficient_of_variation):
        out = fn(v)
        assert out.shape == (5, 3)
        for i in range(5):
            for j in range(3):
                np.testing.assert_equal(out[i, j], fn(v[i, j]))
    dev = A.max_deviation(v, overall)
    np.testing.assert_equal(dev[2, 1], A.max_deviation(v[2, 1], overall[2, 1]))
