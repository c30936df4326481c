"""Aggregators: per-group values -> one disparity number, each implemented once.

Input ``values`` has shape (..., G): the last axis holds one value per group, leading axes
are batches (e.g. bootstrap resamples) and give one result each. NaN (or inf) marks an
undefined group (no rows, or a rate whose denominator is 0) and is left out.

=====================  ====================================================================
``difference``         max - min                       (lower is fairer; NaN with < min_groups)
``ratio``              min / max                       (higher is fairer)
``group_min/max``      min / max
``std``                standard deviation, sample (ddof=1) by default (the clinical report)
``max_deviation``      max_g |v_g - overall|           (the hospital's parity scores)
``coefficient_of_     std / mean, population (ddof=0) std by default (wait-time equity);
variation``            NaN unless mean > 0
``equity_scaled``      overall / (1 + std)             (equity-scaled F1 / accuracy)
``as_score``           1 - unfairness; 1.0 (nothing to be unfair about) when undefined
=====================  ====================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

NAN = float("nan")


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def _masked(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as float, finite mask, finite count over the last axis)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return v, ok, ok.sum(-1)


def _along_last(fn: Callable[[np.ndarray], float], values) -> float | np.ndarray:
    """``fn`` (1-D finite values -> float) applied to every row of the last axis."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim <= 1:
        return fn(v[np.isfinite(v)])
    rows = v.reshape(-1, v.shape[-1])
    return np.array([fn(r[np.isfinite(r)]) for r in rows]).reshape(v.shape[:-1])


def group_max(values) -> float | np.ndarray:
    """Largest defined group value (NaN if none)."""
    v, ok, n = _masked(values)
    return _out(np.where(n > 0, np.max(np.where(ok, v, -np.inf), axis=-1, initial=-np.inf), NAN))


def group_min(values) -> float | np.ndarray:
    """Smallest defined group value (NaN if none)."""
    v, ok, n = _masked(values)
    return _out(np.where(n > 0, np.min(np.where(ok, v, np.inf), axis=-1, initial=np.inf), NAN))


def difference(values, *, min_groups: int = 2) -> float | np.ndarray:
    """max - min over the defined groups; NaN with fewer than ``min_groups`` of them
    (fairlearn's ``difference()`` is 0 for a single group: ``min_groups=1``)."""
    _, _, n = _masked(values)
    with np.errstate(invalid="ignore"):
        gap = np.asarray(group_max(values)) - np.asarray(group_min(values))
    return _out(np.where(n >= min_groups, gap, NAN))


def ratio(values, *, min_groups: int = 2) -> float | np.ndarray:
    """min / max over the defined groups (1 = equal); NaN with fewer than ``min_groups``."""
    _, _, n = _masked(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.asarray(group_min(values)) / np.asarray(group_max(values))
    return _out(np.where(n >= min_groups, r, NAN))


def std(values, *, ddof: int = 1, min_groups: int = 2) -> float | np.ndarray:
    """Standard deviation over the defined groups (``ddof=1``: sample std, as the clinical
    report's sigma); NaN with fewer than ``min_groups`` of them."""
    def one(v: np.ndarray) -> float:
        return float(np.std(v, ddof=ddof)) if v.size >= max(min_groups, ddof + 1) else NAN

    return _along_last(one, values)


def max_deviation(values, overall) -> float | np.ndarray:
    """max_g |v_g - overall| over the defined groups; NaN if none or ``overall`` is undefined.

    ``overall`` is a scalar or has the batch shape of ``values`` (...,).
    """
    v, ok, n = _masked(values)
    o = np.asarray(overall, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        dev = np.max(np.where(ok, np.abs(v - o[..., None]), -np.inf), axis=-1,
                     initial=-np.inf)
    return _out(np.where((n > 0) & np.isfinite(o), dev, NAN))


def coefficient_of_variation(values, *, ddof: int = 0, min_groups: int = 2
                             ) -> float | np.ndarray:
    """std / mean over the defined groups (population std by default, as the hospital's
    wait-time equity); NaN with fewer than ``min_groups`` groups or a mean <= 0."""
    def one(v: np.ndarray) -> float:
        if v.size < min_groups or v.mean() <= 0:
            return NAN
        return float(v.std(ddof=ddof) / v.mean())

    return _along_last(one, values)


def equity_scaled(overall, values, *, ddof: int = 1) -> float | np.ndarray:
    """overall / (1 + std(values)): performance discounted by its spread over groups."""
    return _out(np.asarray(overall, dtype=np.float64) / (1 + np.asarray(std(values, ddof=ddof))))


def as_score(unfairness: float) -> float:
    """A score in which higher is fairer: ``1 - unfairness``; 1.0 when the unfairness is
    undefined (no group, or nothing to compare)."""
    return 1.0 - float(unfairness) if math.isfinite(unfairness) else 1.0


AGGREGATORS: dict[str, Callable] = {
    "difference": difference, "ratio": ratio, "group_min": group_min, "group_max": group_max,
    "std": std, "max_deviation": max_deviation, "coefficient_of_variation":
    coefficient_of_variation, "equity_scaled": equity_scaled,
}
