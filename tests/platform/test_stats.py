"""platform.stats against scipy/statsmodels and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from platform import stats

X = [1.0, 2.0, 3.0, 4.0, 5.0]
Y = [2.0, 4.0, 6.0, 8.0, 10.0]


def test_summarize_matches_numpy_and_ci_contains_mean():
    s = stats.summarize(X)
    assert s.n == 5 and s.mean == 3.0
    assert s.std == pytest.approx(math.sqrt(2.5))  # sample std by hand: sum((x-3)^2)/4
    assert s.ci_low <= s.mean <= s.ci_high
    assert s.ci_low > min(X) - 1e-12 and s.ci_high < max(X) + 1e-12


def test_summarize_ci_equals_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    x = rng.normal(size=7)
    s = stats.summarize(x, seed=11, n_resamples=999)
    ref = sps.bootstrap((x,), np.mean, n_resamples=999, method="percentile",
                        random_state=np.random.default_rng(11))
    assert (s.ci_low, s.ci_high) == pytest.approx(
        (ref.confidence_interval.low, ref.confidence_interval.high))


def test_summarize_edge_cases():
    assert stats.summarize([]).n == 0 and math.isnan(stats.summarize([]).mean)
    one = stats.summarize([2.0])
    assert one.mean == 2.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    const = stats.summarize([0.5, 0.5, 0.5])
    assert (const.ci_low, const.mean, const.ci_high) == (0.5, 0.5, 0.5)
    assert stats.summarize([1.0, np.nan, 3.0]).n == 2  # non-finite dropped


def test_welch_matches_scipy_and_hand_formula():
    w = stats.welch(X, Y)
    ref = sps.ttest_ind(X, Y, equal_var=False)
    assert w.statistic == pytest.approx(ref.statistic) and w.pvalue == pytest.approx(ref.pvalue)
    # By hand: t = (3 - 6) / sqrt(2.5/5 + 10/5); Welch-Satterthwaite df.
    se2 = 2.5 / 5 + 10.0 / 5
    assert w.statistic == pytest.approx(-3 / math.sqrt(se2))
    df = se2**2 / ((2.5 / 5) ** 2 / 4 + (10.0 / 5) ** 2 / 4)
    assert w.df == pytest.approx(df)


def test_welch_degenerate_inputs():
    assert stats.welch([1, 1], [1, 1]).pvalue == 1.0
    assert stats.welch([1, 1], [2, 2]).pvalue == 0.0
    assert math.isnan(stats.welch([1.0], [1.0, 2.0]).pvalue)
    # means of equal returns summed in another order differ in the last bits: still constant
    # (measured: a collapsed policy's per-seed eval means -38.943 +- 1.4e-16 gave t ~ 6e15)
    r = -38.943
    noisy = [r, r + 1e-14, r - 1e-14]
    assert stats.welch(noisy, [r] * 3).pvalue == 1.0 and stats.cohens_d(noisy, [r] * 3) == 0.0
    assert stats.welch(noisy, [-116.8] * 3).pvalue == 0.0
    assert stats.cohens_d(noisy, [-116.8] * 3) == math.inf
    # a real (small) spread is not round-off
    assert 0 < stats.welch([r, r + 1e-3, r - 1e-3], [r + 0.01] * 3).pvalue < 1


def test_adjust_bonferroni_holm_hand_values():
    p = [0.01, 0.04, 0.03, 0.5]
    assert stats.adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])
    # Holm by hand: sorted 0.01*4, 0.03*3, 0.04*2, 0.5*1 with running max.
    assert stats.adjust(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    nan = stats.adjust([0.01, np.nan, 0.02], "bonferroni")
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.04)


def test_adjust_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for k in (1, 2, 7, 30):
        p = rng.uniform(0, 0.2, k) ** 2
        p[rng.integers(k)] = p[0]  # a tie
        for method in ("bonferroni", "holm"):
            np.testing.assert_allclose(stats.adjust(p, method), multipletests(p, method=method)[1],
                                       rtol=0, atol=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=30))
def test_adjusted_pvalues_are_monotone_and_in_unit_interval(p):
    p = np.asarray(p)
    order = np.argsort(p, kind="stable")
    for method in ("bonferroni", "holm"):
        adj = stats.adjust(p, method)
        assert np.all((adj >= 0) & (adj <= 1))
        assert np.all(adj >= p - 1e-12)  # never smaller than the raw p-value
        assert np.all(np.diff(adj[order]) >= -1e-12)  # order of raw p-values is preserved
    assert np.all(stats.adjust(p, "holm") <= stats.adjust(p, "bonferroni") + 1e-12)


def test_cohens_d_known_case():
    # means 3 and 6, variances 2.5 and 10 -> pooled sd sqrt((4*2.5 + 4*10)/8) = sqrt(6.25) = 2.5
    assert stats.cohens_d(X, Y) == pytest.approx(-3 / 2.5)
    assert stats.cohens_d(Y, X) == pytest.approx(1.2)
    assert stats.cohens_d([1, 1], [1, 1]) == 0.0
    assert stats.cohens_d([2, 2], [1, 1]) == math.inf


def test_relative_change_improvement_and_retention():
    gap_base, gap_new = [0.20, 0.22, 0.18], [0.15, 0.16, 0.14]
    imp = stats.relative_change(gap_new, gap_base, kind="improvement", direction="lower")
    assert imp.value == pytest.approx(100 * (0.20 - 0.15) / 0.20)  # +25%: the gap shrank
    assert imp.ci_low <= imp.value <= imp.ci_high
    up = stats.relative_change([0.9, 0.8], [0.6, 0.6], kind="improvement", direction="higher")
    assert up.value == pytest.approx(100 * (0.85 - 0.6) / 0.6)
    ret = stats.relative_change([98.0, 97.0, 99.0], [100.0, 101.0, 99.0], kind="retention")
    assert ret.value == pytest.approx(98.0)
    assert ret.ci_low <= ret.value <= ret.ci_high
    neg = stats.relative_change([-110.0, -110.0], [-100.0, -100.0], kind="retention")
    assert neg.value == pytest.approx(90.0) and neg.ci_low == neg.ci_high == pytest.approx(90.0)
    assert math.isnan(stats.relative_change([1.0], [0.0, 0.0], kind="retention").value)


def test_relative_change_ci_matches_two_sample_scipy_bootstrap():
    rng = np.random.default_rng(5)
    x, b = rng.normal(10, 1, 5), rng.normal(9, 1, 5)
    got = stats.relative_change(x, b, kind="retention", seed=2, n_resamples=999)

    def ratio(a, c, axis=-1):
        return 100 * np.mean(a, axis=axis) / np.mean(c, axis=axis)

    ref = sps.bootstrap((x, b), ratio, n_resamples=999, method="percentile", paired=False,
                        random_state=np.random.default_rng(2))
    assert got.value == pytest.approx(ratio(x, b))
    assert (got.ci_low, got.ci_high) == pytest.approx(
        (ref.confidence_interval.low, ref.confidence_interval.high))
