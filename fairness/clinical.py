"""Clinical fairness metrics: disaggregated, multiclass, intersectional (FairGRPO, arXiv 2510.19893).

The authors' evaluation, built from the package's pieces: per group (one value of a sensitive
attribute, or of an intersection of attributes) the registered confusion rates
``accuracy, f1, tpr, fpr, fdr`` (``fairness.metrics``; one-vs-rest per class, averaged with
equal class weight over the classes present in the group, sklearn's ``average="macro"``;
rates whose denominator is 0 are left out; ``average="binary"``: only ``pos_label``;
``average="auto"`` (default): binary for exactly two labels, positive = the larger) counted
by one ``np.bincount`` (``fairness.confusion``). Pass ``labels`` to fix the class set.

Per attribute, over the groups with at least ``min_group_size`` samples (smaller ones are
"too small": reported by name and size only, for privacy and stability), with the
aggregators of ``fairness.aggregate``:

    pp_gap  = difference(FDR) (predictive parity gap)  eod = difference(TPR)
    f1_std  = std(F1) (sample, ddof=1)                 f1_gap = difference(F1)
    es_f1   = equity_scaled(F1_overall, F1)             and the same three for accuracy

Per dataset: the mean over attributes; overall: the mean over datasets. Confidence
intervals: ``fairness.bootstrap`` (resampling samples with replacement, percentile).
fairlearn's own differences are ``fairness.scores.fairlearn_differences``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from base.errors import UsageError
from fairness.aggregate import difference, equity_scaled, std
from fairness.bootstrap import bootstrap_ci
from fairness.confusion import group_rates
from fairness.groups import Average, encode_labels, group_codes, resolve_average
from fairness.metrics import METRICS

GROUP_METRICS = ("accuracy", "f1", "tpr", "fpr", "fdr")
HEADLINE = ("pp_gap", "eod", "f1_std", "f1_gap", "es_f1", "acc_std", "acc_gap", "es_acc")


class ReportDict(dict):
    """The report: flat ``name -> float`` metrics plus one non-metric key, ``"too_small"``
    (list of ``"attr=group (n=K)"``). ``metrics()`` returns only the floats."""

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.items() if isinstance(v, float)}


def fast_group_metrics(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int, K: int,
                       mode: str = "macro", pos: int | None = None) -> dict[str, np.ndarray]:
    """(n_groups,) arrays of accuracy, f1, tpr, fpr, fdr and n, counted with one ``np.bincount``.

    yt, yp: int class codes (n,) in [0, K); g: int group codes (n,) in [0, n_groups).
    """
    return group_rates(yt, yp, g, n_groups, K, {m: METRICS.get(m) for m in GROUP_METRICS},
                       mode, pos)


def attribute_summary(gm: dict[str, np.ndarray], overall: dict[str, float],
                      min_group_size: int) -> dict[str, float]:
    """Headline metrics for one attribute from its per-group arrays (groups >= min size)."""
    ok = gm["n"] >= min_group_size
    f1, acc = gm["f1"][ok], gm["accuracy"][ok]
    return {"pp_gap": difference(gm["fdr"][ok]), "eod": difference(gm["tpr"][ok]),
            "f1_std": std(f1), "f1_gap": difference(f1), "es_f1": equity_scaled(overall["f1"], f1),
            "acc_std": std(acc), "acc_gap": difference(acc),
            "es_acc": equity_scaled(overall["accuracy"], acc)}


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _scalars(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size,
             with_groups: bool) -> tuple[dict[str, float], dict]:
    """All scalar metrics for one (re)sample; ``attrs``: [(name, codes, group names)]."""
    out: dict[str, float] = {}
    per_ds: dict[str, dict[str, float]] = {}
    for di, dname in enumerate(ds_names):
        m = ds_code == di
        ov = fast_group_metrics(yt[m], yp[m], np.zeros(int(m.sum()), np.int64), 1, K, mode, pos)
        overall = {"f1": float(ov["f1"][0]), "accuracy": float(ov["accuracy"][0])}
        per_attr = {}
        for aname, codes, names in attrs:
            gm = fast_group_metrics(yt[m], yp[m], codes[m], len(names), K, mode, pos)
            per_attr[aname] = attribute_summary(gm, overall, min_group_size)
        ds_vals = {h: _nanmean([per_attr[a][h] for a in per_attr]) for h in HEADLINE}
        ds_vals.update({"f1": overall["f1"], "accuracy": overall["accuracy"]})
        per_ds[dname] = ds_vals
        prefix = "" if dname is None else f"dataset/{dname}/"
        for aname, vals in per_attr.items():
            for h, v in vals.items():
                out[f"fairness/{prefix}{aname}/{h}"] = v
        if dname is not None:
            for h in HEADLINE:
                out[f"fairness/dataset/{dname}/{h}"] = ds_vals[h]
            out[f"overall/dataset/{dname}/f1"] = overall["f1"]
            out[f"overall/dataset/{dname}/accuracy"] = overall["accuracy"]
    for h in HEADLINE:
        out[f"fairness/{h}"] = _nanmean([v[h] for v in per_ds.values()])
    out["overall/f1"] = _nanmean([v["f1"] for v in per_ds.values()])
    out["overall/accuracy"] = _nanmean([v["accuracy"] for v in per_ds.values()])
    groups = {}
    if with_groups:
        for aname, codes, names in attrs:
            groups[aname] = (names, fast_group_metrics(yt, yp, codes, len(names), K, mode, pos))
    return out, groups


def clinical_fairness_report(y_true: Any, y_pred: Any, sensitive: pd.DataFrame,
                             labels: Sequence | None = None, dataset: Any = None,
                             min_group_size: int = 10, ci: bool = False, n_boot: int = 200,
                             seed: int = 0, average: Average = "auto", pos_label: Any = None,
                             confidence: float = 0.95) -> ReportDict:
    """Flat MLflow-ready fairness report (see the module docstring for definitions).

    y_true, y_pred: (n,) class labels; sensitive: DataFrame (n, n_attributes), one column per
    attribute (make an intersection column, e.g. ``race&sex``, to treat it as one attribute);
    dataset: optional (n,) data source per sample. Keys: ``fairness/<headline>``,
    ``overall/f1``, ``overall/accuracy``, ``fairness/<attr>/<headline>`` (or
    ``fairness/dataset/<ds>/<attr>/<headline>`` and ``fairness/dataset/<ds>/<headline>`` with
    ``dataset``), ``fairness/by_group/<attr>=<group>/{accuracy,f1,tpr,fpr,fdr,n}`` for groups of
    at least ``min_group_size`` (pooled over datasets); with ``ci=True`` also
    ``<key>/ci_low`` and ``<key>/ci_high`` for every key except by_group. Non-metric key:
    ``too_small`` (list of ``"attr=group (n=K)"``).
    """
    if isinstance(sensitive, pd.Series):
        sensitive = sensitive.to_frame()
    if not isinstance(sensitive, pd.DataFrame) or sensitive.shape[1] == 0:
        raise UsageError("sensitive: expected a DataFrame with one column per attribute")
    yt, yp, classes = encode_labels(y_true, y_pred, labels)
    if len(sensitive) != len(yt):
        raise UsageError(f"sensitive: {len(sensitive)} rows != {len(yt)} labels")
    if min_group_size < 1:
        raise UsageError(f"min_group_size: must be >= 1, got {min_group_size}")
    if ci and n_boot < 10:
        raise UsageError(f"n_boot: must be >= 10 for a CI, got {n_boot}")
    mode, pos = resolve_average(average, classes, pos_label)
    K = max(len(classes), 1)
    sens = sensitive.reset_index(drop=True)
    attrs = []
    for col in sens.columns:
        if sens[col].isna().any():
            raise UsageError(f"sensitive: column {col!r} has missing values")
        codes, names = group_codes(sens, [col])
        attrs.append((str(col), codes, names))
    if dataset is None:
        ds_code, ds_names = np.zeros(len(yt), np.int64), [None]
    else:
        ds = np.asarray(dataset, dtype=object)
        if len(ds) != len(yt):
            raise UsageError(f"dataset: length {len(ds)} != {len(yt)} labels")
        codes, uniq = pd.factorize(ds, sort=True)
        ds_code, ds_names = codes.astype(np.int64), [str(u) for u in uniq]

    point, groups = _scalars(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size,
                             with_groups=True)
    report = ReportDict()
    report.update({k: float(v) for k, v in point.items()})
    too_small = []
    for aname, (names, gm) in groups.items():
        for gi, gname in enumerate(names):
            n = int(gm["n"][gi])
            if n < min_group_size:
                too_small.append(f"{aname}={gname} (n={n})")
                continue
            for stat in GROUP_METRICS:
                report[f"fairness/by_group/{aname}={gname}/{stat}"] = float(gm[stat][gi])
            report[f"fairness/by_group/{aname}={gname}/n"] = float(n)
    if ci:
        report.update(_intervals(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size,
                                 point, n_boot, seed, confidence))
    report["too_small"] = too_small
    return report


def _intervals(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size, point, n_boot,
               seed, confidence=0.95) -> dict[str, float]:
    """Percentile bootstrap over samples: ``<key>/ci_low`` and ``<key>/ci_high``."""
    def statistic(yt_b, yp_b, ds_b, *codes_b):
        rattrs = [(a, c, names) for (a, _, names), c in zip(attrs, codes_b)]
        return _scalars(yt_b, yp_b, K, mode, pos, rattrs, ds_b, ds_names, min_group_size,
                        with_groups=False)[0]

    cis = bootstrap_ci(statistic, yt, yp, ds_code, *(c for _, c, _ in attrs),
                       n_resamples=n_boot, confidence=confidence, seed=seed)
    out = {}
    for k, (low, high) in cis.items():
        if k in point:
            out[f"{k}/ci_low"], out[f"{k}/ci_high"] = low, high
    return out
