"""The one bootstrap: percentile confidence intervals over resampled units, seeded.

The unit is whatever one row of the samples is: a patient (the clinical report, the fairness
CLI, the tabular tool) or a seed / trial (``platform.stats`` for sweep reports). Resampling
draws ``np.random.default_rng(seed).integers(0, n, (n_resamples, n))``:

* ``paired=True``: one index matrix for all samples (rows of one table resampled together:
  y_true, y_pred and groups of the same patients);
* ``paired=False``: one per sample, in order (independent samples, e.g. a sweep cell and
  its baseline) -- the same draws as ``scipy.stats.bootstrap(..., paired=False)``.

The statistic returns a float or a mapping ``name -> float`` (one interval per name). With
``vectorized=True`` it receives the resampled samples with a leading axis (one entry per
resample of a batch) and returns arrays of that length. The interval is the percentile interval
(linear quantiles ``(1 - confidence)/2`` and ``(1 + confidence)/2`` of the draws).

Undefined draws (NaN/inf, e.g. a gap with one group left in a resample): ``nan_policy="omit"``
drops them and gives no interval when fewer than ``min_valid`` draws are left (default
``max(10, n_resamples // 2)``: undefined in most resamples); ``"propagate"`` keeps them, as
scipy does (a NaN draw makes the interval NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from base.errors import UsageError

NanPolicy = Literal["omit", "propagate"]
Interval = tuple[float, float]


def resample_indices(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of ``n_resamples`` resamples with replacement, shape (n_resamples, n)."""
    return rng.integers(0, n, (n_resamples, n))


def _collect(outs: list[Any], n_resamples: int) -> dict[str, np.ndarray] | np.ndarray:
    """Statistic values per resample (floats or mappings) -> (B,) array or {name: (B,)}."""
    if not any(isinstance(o, Mapping) for o in outs):
        return np.asarray(outs, dtype=np.float64).reshape(n_resamples)
    draws: dict[str, np.ndarray] = {}
    for b, out in enumerate(outs):
        for k, v in out.items():  # a name missing from a resample is NaN there
            draws.setdefault(k, np.full(n_resamples, np.nan))[b] = v
    return draws


def _concat(chunks: list[Any]) -> dict[str, np.ndarray] | np.ndarray:
    """Vectorised statistic values of consecutive chunks of resamples, joined."""
    if isinstance(chunks[0], Mapping):
        return {k: np.concatenate([np.asarray(c[k], dtype=np.float64).reshape(-1)
                                   for c in chunks]) for k in chunks[0]}
    return np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in chunks])


def bootstrap_draws(statistic: Callable[..., Any], *samples: Any, n_resamples: int = 1000,
                    seed: int = 0, paired: bool = True, vectorized: bool = False,
                    batch: int | None = None) -> dict[str, np.ndarray] | np.ndarray:
    """The statistic on each resample: (n_resamples,) array, or one per name of a mapping.

    Paired resamples are drawn ``batch`` at a time (default: about 4M indices per batch), so
    memory stays bounded; the draws do not depend on ``batch`` (numpy draws the same stream
    in one call or in several).
    """
    if n_resamples < 1:
        raise UsageError(f"n_resamples: must be >= 1, got {n_resamples}")
    arrays = [np.asarray(s) for s in samples]
    rng = np.random.default_rng(seed)
    if not paired:  # scipy's order: all resamples of the first sample, then the next
        indices = [resample_indices(len(a), n_resamples, rng) for a in arrays]
        resampled = [a[i] for a, i in zip(arrays, indices)]
        if vectorized:
            return _concat([statistic(*resampled)])
        return _collect([statistic(*(r[b] for r in resampled)) for b in range(n_resamples)],
                        n_resamples)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise UsageError(f"paired bootstrap: samples of lengths {[len(a) for a in arrays]}")
    batch = batch or max(1, (1 << 22) // max(n, 1))
    outs: list[Any] = []
    for start in range(0, n_resamples, batch):
        idx = resample_indices(n, min(batch, n_resamples - start), rng)
        if vectorized:
            outs.append(statistic(*(a[idx] for a in arrays)))
        else:
            outs += [statistic(*(a[i] for a in arrays)) for i in idx]
    return _concat(outs) if vectorized else _collect(outs, n_resamples)


def percentile_interval(draws: np.ndarray, confidence: float = 0.95,
                        nan_policy: NanPolicy = "omit", min_valid: int | None = None
                        ) -> Interval | None:
    """Percentile interval of bootstrap draws (B,); None when too few are defined (omit)."""
    if not 0 < confidence < 1:
        raise UsageError(f"confidence: must be in (0, 1), got {confidence}")
    v = np.asarray(draws, dtype=np.float64)
    if nan_policy == "omit":
        v = v[np.isfinite(v)]
        need = max(10, len(draws) // 2) if min_valid is None else min_valid
        if v.size < max(need, 1):
            return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(v, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(statistic: Callable[..., Any], *samples: Any, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0, paired: bool = True,
                 vectorized: bool = False, nan_policy: NanPolicy = "omit",
                 min_valid: int | None = None, batch: int | None = None
                 ) -> dict[str, Interval] | Interval:
    """Percentile bootstrap CI(s) of ``statistic(*samples)`` (see the module docstring).

    Returns ``(low, high)`` for a scalar statistic (NaNs when undefined), or ``{name: (low,
    high)}`` for a mapping statistic, without the names that have no interval.
    """
    draws = bootstrap_draws(statistic, *samples, n_resamples=n_resamples, seed=seed,
                            paired=paired, vectorized=vectorized, batch=batch)
    if isinstance(draws, dict):
        out = {k: percentile_interval(v, confidence, nan_policy, min_valid)
               for k, v in draws.items()}
        return {k: v for k, v in out.items() if v is not None}
    return percentile_interval(draws, confidence, nan_policy, min_valid) or (np.nan, np.nan)
