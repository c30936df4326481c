"""Fairness and efficiency metrics of one hospital episode, as pure functions.

``episode_metrics(log)`` works on the log an env writes (``env.unwrapped.episode_log()``,
also the source of ``info["episode_metrics"]`` at the last step) or on any mapping with the
same keys, e.g. logged episodes reloaded later. Per-group quantities are plain functions
disaggregated by :func:`by_group` (fairlearn MetricFrame-style); the scalar fairness metrics
are thin wrappers:

* DP  = 1 - max_g |P(treat | g) - P(treat)|           (demographic parity of admission)
* EO  = 1 - max_g |P(success | treat, g) - P(success | treat)|   (equalized odds)
* WTE = 1 - CV(mean wait by group)                     (wait-time equity; CV = std / mean)
* individual = 1 - mean_i |treat_i - mean_{j in kNN(i)} treat_j|, neighbours by clinical
  features (same arrival severity, nearest acuity; k = 5): similar patients, similar decisions.

Groups with no patients are left out of the scalar metrics (their ``n`` is 0). Every value is
a finite float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

SEVERITY_NAMES = ("routine", "urgent", "critical")
UTIL_NAMES = ("general", "icu", "pediatric")
COUNT_KEYS = (
    "arrived",
    "admitted",
    "discharged",
    "died",
    "transferred",
    "in_system",
    "deteriorated",
    "invalid",
)
KNN = 5


def metric_keys(group_names: list[str] | tuple[str, ...]) -> list[str]:
    """The exact, ordered key set of :func:`episode_metrics` for these groups."""
    keys = ["fairness/dp", "fairness/eo", "fairness/wte", "fairness/individual"]
    keys += [f"util/{u}" for u in UTIL_NAMES] + ["util/staff"]
    for g in group_names:
        keys += [f"group/{g}/{m}" for m in ("mean_wait", "success_rate", "treat_rate", "n")]
    keys += [f"wait/{s}/{g}" for s in SEVERITY_NAMES for g in group_names]
    keys += [f"patients/{c}" for c in COUNT_KEYS]
    return keys


def by_group(
    fn: Callable[..., float], group: np.ndarray, n_groups: int, **cols: np.ndarray
) -> np.ndarray:
    """``fn(**cols restricted to group g)`` for each g, shape (n_groups,); NaN where empty."""
    out = np.full(n_groups, np.nan)
    for g in range(n_groups):
        sel = group == g
        if sel.any():
            out[g] = fn(**{k: v[sel] for k, v in cols.items()})
    return out


def _rate(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


def parity(per_group: np.ndarray, overall: float) -> float:
    """1 - max |per_group - overall| over the groups that are defined (1 if none)."""
    v = per_group[np.isfinite(per_group)]
    if v.size == 0 or not np.isfinite(overall):
        return 1.0
    return float(1.0 - np.max(np.abs(v - overall)))


def wait_time_equity(mean_wait: np.ndarray) -> float:
    """1 - coefficient of variation (population std / mean) of the defined group means."""
    v = mean_wait[np.isfinite(mean_wait)]
    if v.size < 2 or v.mean() <= 0:
        return 1.0
    return float(1.0 - v.std() / v.mean())


def individual_fairness(
    severity: np.ndarray, acuity: np.ndarray, treated: np.ndarray, k: int = KNN
) -> float:
    """1 - mean |treated_i - mean of its k nearest neighbours| (same severity, nearest acuity).

    severity, acuity, treated: shape (n,). Exact kNN in 1-D per severity stratum, O(n k).
    """
    total, count = 0.0, 0
    for s in np.unique(severity):
        idx = np.flatnonzero(severity == s)
        if idx.size < 2:
            continue
        order = idx[np.argsort(acuity[idx], kind="stable")]
        a, t = acuity[order], treated[order].astype(float)
        m, kk = a.size, min(k, a.size - 1)
        offs = np.concatenate([np.arange(-kk, 0), np.arange(1, kk + 1)])
        pos = np.arange(m)[:, None] + offs[None, :]
        valid = (pos >= 0) & (pos < m)
        pos_c = np.clip(pos, 0, m - 1)
        dist = np.where(valid, np.abs(a[pos_c] - a[:, None]), np.inf)
        near = np.argsort(dist, axis=1, kind="stable")[:, :kk]
        neigh = t[np.take_along_axis(pos_c, near, 1)].mean(1)
        total += float(np.abs(t - neigh).sum())
        count += m
    return 1.0 if count == 0 else 1.0 - total / count


def episode_metrics(log: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``{name: float}`` of one episode; keys are exactly :func:`metric_keys`."""
    names = list(log["group_names"])
    G = len(names)
    group = np.asarray(log["group"], np.int64)
    sev = np.asarray(log["severity"], np.int64)
    treated = np.asarray(log["treated"], bool)
    success = np.asarray(log["success"], bool)
    wait = np.asarray(log["wait"], float)
    acuity = np.asarray(log["acuity"], float)

    treat_rate = by_group(_rate, group, G, x=treated)
    succ_rate = by_group(lambda x, t: _rate(x[t]), group, G, x=success, t=treated)
    mean_wait = by_group(_rate, group, G, x=wait)
    n = np.bincount(group, minlength=G)[:G]

    out: dict[str, float] = {
        "fairness/dp": parity(treat_rate, _rate(treated)),
        "fairness/eo": parity(succ_rate, _rate(success[treated])),
        "fairness/wte": wait_time_equity(mean_wait),
        "fairness/individual": individual_fairness(sev, acuity, treated),
    }
    bed_hours = np.asarray(log["bed_hours"], float)
    beds = np.asarray(log["beds"], float)
    for i, u in enumerate(UTIL_NAMES):
        out[f"util/{u}"] = float(bed_hours[i] / beds[i]) if beds[i] > 0 else 0.0
    staff_hours = float(log["staff_hours"])
    out["util/staff"] = float(log["staff_busy_hours"]) / staff_hours if staff_hours > 0 else 0.0
    fin = lambda x: float(x) if np.isfinite(x) else 0.0
    for g, name in enumerate(names):
        out[f"group/{name}/mean_wait"] = fin(mean_wait[g])
        out[f"group/{name}/success_rate"] = fin(succ_rate[g])
        out[f"group/{name}/treat_rate"] = fin(treat_rate[g])
        out[f"group/{name}/n"] = float(n[g])
    for s, sname in enumerate(SEVERITY_NAMES):
        w = by_group(_rate, group[sev == s], G, x=wait[sev == s])
        for g, name in enumerate(names):
            out[f"wait/{sname}/{name}"] = fin(w[g])
    counts = log["counts"]
    for c in COUNT_KEYS:
        out[f"patients/{c}"] = float(counts[c])
    return out
