"""Fairness and efficiency metrics of one hospital episode, as pure functions.

``episode_metrics(log)`` works on the log an env writes (``env.unwrapped.episode_log()``,
also the source of ``info["episode_metrics"]`` at the last step) or on any mapping with the
same keys, e.g. logged episodes reloaded later. Per-group quantities are the registered
metrics ``treatment_rate``, ``success_rate`` and ``mean_wait`` of one
:class:`fairness.MetricFrame`; the scores are the package's (``fairness.scores``). Each is
a *score*: higher is fairer, 1 = no disparity.

* ``fairness/dp_score``  = 1 - max_g |P(treat | g) - P(treat)|  (demographic parity of admission)
* ``fairness/eo_score``  = 1 - max_g |P(success | treat, g) - P(success | treat)|  (equalized odds)
* ``fairness/wte_score`` = 1 - CV(mean wait by group)  (wait-time equity; CV = std / mean)
* ``fairness/individual_score`` = 1 - mean_i |treat_i - mean_{j in kNN(i)} treat_j|, neighbours
  by clinical features (same arrival severity, nearest acuity; k = 5): similar patients,
  similar decisions.

Groups with no patients are left out of the scalar metrics (their ``n`` is 0). Every value
is a finite float.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fairness.frame import MetricFrame
from fairness.groups import Groups
from fairness.scores import equity_score, parity_score

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
#: the episode's fairness scores (higher is fairer)
SCORE_KEYS = ("fairness/dp_score", "fairness/eo_score", "fairness/wte_score",
              "fairness/individual_score")
#: per-group key suffix -> registered per-group metric (fairness.metrics)
GROUP_METRICS = {"treat_rate": "treatment_rate", "success_rate": "success_rate",
                 "mean_wait": "mean_wait"}


def metric_keys(group_names: list[str] | tuple[str, ...]) -> list[str]:
    """The exact, ordered key set of :func:`episode_metrics` for these groups."""
    keys = list(SCORE_KEYS)
    keys += [f"util/{u}" for u in UTIL_NAMES] + ["util/staff"]
    for g in group_names:
        keys += [f"group/{g}/{m}" for m in ("mean_wait", "success_rate", "treat_rate", "n")]
    keys += [f"wait/{s}/{g}" for s in SEVERITY_NAMES for g in group_names]
    keys += [f"patients/{c}" for c in COUNT_KEYS]
    return keys


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
    group = np.asarray(log["group"], np.int64)
    sev = np.asarray(log["severity"], np.int64)
    treated = np.asarray(log["treated"], bool)
    success = np.asarray(log["success"], bool)
    wait = np.asarray(log["wait"], float)
    acuity = np.asarray(log["acuity"], float)

    groups = Groups(group, names)
    frame = MetricFrame(GROUP_METRICS, groups, treated=treated, success=success, wait=wait)
    n = groups.counts

    out: dict[str, float] = {
        "fairness/dp_score": parity_score(frame, "treat_rate"),
        "fairness/eo_score": parity_score(frame, "success_rate"),
        "fairness/wte_score": equity_score(frame, "mean_wait"),
        "fairness/individual_score": individual_fairness(sev, acuity, treated),
    }
    bed_hours = np.asarray(log["bed_hours"], float)
    beds = np.asarray(log["beds"], float)
    for i, u in enumerate(UTIL_NAMES):
        out[f"util/{u}"] = float(bed_hours[i] / beds[i]) if beds[i] > 0 else 0.0
    staff_hours = float(log["staff_hours"])
    out["util/staff"] = float(log["staff_busy_hours"]) / staff_hours if staff_hours > 0 else 0.0
    fin = lambda x: float(x) if np.isfinite(x) else 0.0
    values = {k: frame.group_values(k) for k in ("mean_wait", "success_rate", "treat_rate")}
    for g, name in enumerate(names):
        for k, v in values.items():
            out[f"group/{name}/{k}"] = fin(v[g])
        out[f"group/{name}/n"] = float(n[g])
    for s, sname in enumerate(SEVERITY_NAMES):
        stratum = sev == s
        w = MetricFrame("mean_wait", Groups(group[stratum], names),
                        wait=wait[stratum]).group_values("mean_wait")
        for g, name in enumerate(names):
            out[f"wait/{sname}/{name}"] = fin(w[g])
    counts = log["counts"]
    for c in COUNT_KEYS:
        out[f"patients/{c}"] = float(counts[c])
    return out
