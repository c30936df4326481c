"""Statistics for sweep reports: summaries, bootstrap CIs, Welch tests, corrections, effect sizes.

Thin, pure wrappers over scipy, statsmodels and the project's one bootstrap
(``fairness.bootstrap``, whose resampling unit here is a seed; its draws equal
``scipy.stats.bootstrap(..., method="percentile", paired=False)``):

* :func:`summarize` -- mean, std (ddof=1) and a 95% bootstrap CI of the mean over seeds
  (percentile method: with 2-5 seeds BCa is degenerate).
* :func:`welch` -- Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``).
* :func:`adjust` -- Bonferroni / Holm corrections (``statsmodels.stats.multitest.multipletests``).
* :func:`cohens_d` -- standardized mean difference with the pooled (ddof=1) standard deviation.
* :func:`relative_change` -- "fairness improvement %" / "efficiency retention %" against a
  baseline sample, with a two-sample bootstrap CI (the two samples are resampled independently).

The hospital technical report's protocol (bootstrap 95% CIs, t-tests with Bonferroni
correction, Cohen's d) is what these implement; Holm is added as the uniformly more powerful
family-wise correction. All inputs are 1-D samples (one value per seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from fairness.bootstrap import bootstrap_ci

Direction = Literal["higher", "lower"]

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Summary of one sample (n values, usually one per seed)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of ``x`` against ``y`` (two-sided)."""

    statistic: float
    pvalue: float
    df: float


REL_TOL = 1e-9  # spread below this (relative to the values' scale) is float round-off


def _constant(a: np.ndarray) -> bool:
    """All values equal up to round-off: range <= REL_TOL x max(1, max |value|)."""
    return bool(np.ptp(a) <= REL_TOL * max(1.0, float(np.max(np.abs(a)))))


def _as_sample(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    return arr


def _bootstrap_ci(data: tuple[np.ndarray, ...], statistic, *, confidence: float,
                  n_resamples: int, seed: int | None) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(*samples, axis)`` (independent resampling).

    Degenerate inputs (a constant sample: every resample equal) give the point estimate as
    both bounds instead of scipy's NaN + warning.
    """
    if any(len(d) < 2 for d in data):
        return (math.nan, math.nan)
    point = float(statistic(*data, axis=-1))
    if all(np.ptp(d) == 0 for d in data):
        return (point, point)
    # Non-finite draws (e.g. a resampled baseline mean of 0 in a ratio) give non-finite
    # bounds, reported as such (as scipy does).
    return bootstrap_ci(statistic, *data, n_resamples=n_resamples, confidence=confidence,
                        seed=0 if seed is None else seed, paired=False, vectorized=True,
                        nan_policy="propagate")


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def summarize(values, *, confidence: float = DEFAULT_CONFIDENCE,
              n_resamples: int = DEFAULT_RESAMPLES, seed: int | None = 0) -> Summary:
    """Mean, sample std (ddof=1) and bootstrap CI of the mean of ``values`` (shape (n,)).

    Non-finite values are dropped. n=0 gives NaNs; n=1 gives std and CI NaN.
    """
    x = _as_sample(values)
    if len(x) == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
    low, high = _bootstrap_ci((x,), _mean, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Summary(len(x), float(np.mean(x)), std, low, high)


def welch(x, y) -> Welch:
    """Two-sided Welch's t-test of mean(x) vs mean(y) (shapes (n,), (m,); n, m >= 2).

    Two constant, equal samples give p = 1 (no evidence of a difference); two constant,
    different samples give p = 0. "Constant" allows float round-off (:func:`_constant`): a
    mean of equal episode returns summed in another order differs in the last bits, which
    would otherwise give t ~ 1e15.
    """
    a, b = _as_sample(x), _as_sample(y)
    if len(a) < 2 or len(b) < 2:
        return Welch(math.nan, math.nan, math.nan)
    if _constant(a) and _constant(b):
        same = bool(np.isclose(a.mean(), b.mean(), rtol=REL_TOL, atol=REL_TOL))
        return Welch(0.0 if same else math.copysign(math.inf, a[0] - b[0]), 1.0 if same else 0.0,
                     float(len(a) + len(b) - 2))
    res = sps.ttest_ind(a, b, equal_var=False)
    return Welch(float(res.statistic), float(res.pvalue), float(res.df))


def adjust(pvalues, method: Literal["bonferroni", "holm"]) -> np.ndarray:
    """Family-wise corrected p-values (shape (k,)): Bonferroni ``min(1, k·p)`` or Holm's
    step-down ``max_{j <= i} min(1, (k - j + 1)·p_(j))`` over the sorted p-values (the same
    numbers as statsmodels' ``multipletests``, checked in the tests; computed here because
    ``multipletests`` runs a full ``gc.collect()`` per call).

    NaN p-values (untestable comparisons) stay NaN and do not count in the family size.
    """
    if method not in ("bonferroni", "holm"):
        raise ValueError(f"method: got {method!r}; allowed: bonferroni, holm")
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    k = ok.size
    if k == 0:
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, k * p[ok])
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    stepped = np.minimum(1.0, (k - np.arange(k)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


def cohens_d(x, y) -> float:
    """(mean(x) - mean(y)) / pooled std, pooled std = sqrt(((n-1)s_x² + (m-1)s_y²)/(n+m-2)).

    Zero pooled variance gives 0 for equal means, ±inf otherwise.
    """
    a, b = _as_sample(x), _as_sample(y)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    diff = float(np.mean(a) - np.mean(b))
    if _constant(a) and _constant(b):
        diff = 0.0 if np.isclose(a.mean(), b.mean(), rtol=REL_TOL, atol=REL_TOL) else diff
        pooled = 0.0
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / pooled


def _improvement_stat(direction: Direction):
    sign = 1.0 if direction == "higher" else -1.0

    def stat(x, base, axis=-1):
        mb = np.mean(base, axis=axis)
        return 100.0 * sign * (np.mean(x, axis=axis) - mb) / np.abs(mb)

    return stat


def _retention_stat(x, base, axis=-1):
    mb = np.mean(base, axis=axis)
    return 100.0 * (1.0 + (np.mean(x, axis=axis) - mb) / np.abs(mb))


@dataclass(frozen=True)
class Change:
    """A percentage against a baseline sample, with its bootstrap CI."""

    value: float
    ci_low: float
    ci_high: float


def relative_change(x, base, *, kind: Literal["improvement", "retention"],
                    direction: Direction = "higher", confidence: float = DEFAULT_CONFIDENCE,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int | None = 0) -> Change:
    """Percent change of mean(x) against mean(base) (shapes (n,), (m,)), with a bootstrap CI.

    * ``improvement``: 100·(mean(x) − mean(base))/|mean(base)|, sign flipped when lower is
      better (a gap that shrinks from 0.20 to 0.15 is a +25% improvement).
    * ``retention``: 100·(1 + (mean(x) − mean(base))/|mean(base)|) -- equals
      100·mean(x)/mean(base) for a positive baseline and stays meaningful for negative returns
      (a return of -110 against -100 retains 90%).

    A baseline mean of 0 makes the ratio undefined: NaN.
    """
    a, b = _as_sample(x), _as_sample(base)
    if len(a) == 0 or len(b) == 0 or float(np.mean(b)) == 0.0:
        return Change(math.nan, math.nan, math.nan)
    stat = _improvement_stat(direction) if kind == "improvement" else _retention_stat
    value = float(stat(a, b))
    low, high = _bootstrap_ci((a, b), stat, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Change(value, low, high)
