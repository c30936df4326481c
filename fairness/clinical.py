"""Clinical fairness metrics: disaggregated, multiclass, intersectional (FairGRPO, arXiv 2510.19893).

Per group (one value of a sensitive attribute, or of an intersection of attributes), a
one-vs-rest confusion matrix per class c gives TP, FP, FN, TN and

    accuracy_c = (TP+TN)/n   f1_c = 2TP/(2TP+FP+FN)   tpr_c = TP/(TP+FN)
    fpr_c = FP/(FP+TN)       fdr_c = FP/(TP+FP) = 1 - PPV

averaged with equal class weight over the classes present in the group (in its y_true or
y_pred; sklearn's ``average="macro"`` convention, so ``f1`` equals sklearn's macro F1). Rates
whose denominator is 0 for a class are left out of that class average. With
``average="binary"`` only ``pos_label`` counts (fairlearn's/sklearn's binary conventions).
``average="auto"`` (default) is binary when the class set has exactly two labels (positive =
the larger), macro otherwise — pass ``labels`` to fix the class set for small batches.

Per attribute, over the groups with at least ``min_group_size`` samples (smaller ones are
"too small": reported by name and size only, for privacy and stability):

    pp_gap  = max - min FDR (predictive parity gap)    eod = max - min TPR
    f1_std  = sample std (ddof=1) of group F1          f1_gap = max - min F1
    es_f1   = F1_overall / (1 + f1_std)                and the same three for accuracy

Per dataset: the mean over attributes; overall: the mean over datasets. Point estimates of
per-group metrics come from fairlearn's ``MetricFrame`` with sklearn's confusion matrices; the
bootstrap (resampling samples with replacement, percentile 95% CIs) uses an equivalent
vectorised ``np.bincount`` path, checked against MetricFrame in the tests.

``fairlearn_differences`` gives fairlearn's own demographic parity, equalized odds and equal
opportunity differences (binary: identical to fairlearn; multiclass: the mean over classes of
the one-vs-rest differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from base.errors import UsageError

GROUP_METRICS = ("accuracy", "f1", "tpr", "fpr", "fdr")
HEADLINE = ("pp_gap", "eod", "f1_std", "f1_gap", "es_f1", "acc_std", "acc_gap", "es_acc")
Average = Literal["auto", "macro", "binary"]


class ReportDict(dict):
    """The report: flat ``name -> float`` metrics plus one non-metric key, ``"too_small"``
    (list of ``"attr=group (n=K)"``). ``metrics()`` returns only the floats."""

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.items() if isinstance(v, float)}


# ---------------------------------------------------------------------------------------------
# Inputs


def encode_labels(y_true: Any, y_pred: Any, labels: Sequence | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list]:
    """Integer codes (n,) for y_true and y_pred over the class list; errors name the field."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise UsageError(f"y_true/y_pred: expected 1-D arrays, got shapes {yt.shape}, {yp.shape}")
    if len(yt) != len(yp):
        raise UsageError(f"y_pred: length {len(yp)} != y_true length {len(yt)}")
    for name, arr in (("y_true", yt), ("y_pred", yp)):
        if pd.isna(pd.Series(arr)).any():
            raise UsageError(f"{name}: contains missing values (NaN/None)")
    if labels is None:
        classes = sorted(set(yt.tolist()) | set(yp.tolist()))
    else:
        classes = list(labels)
        if len(set(classes)) != len(classes):
            raise UsageError(f"labels: duplicates in {classes}")
        for name, arr in (("y_true", yt), ("y_pred", yp)):
            bad = sorted(set(arr.tolist()) - set(classes), key=str)
            if bad:
                raise UsageError(f"{name}: values {bad[:5]} are not in labels {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return (np.fromiter((index[v] for v in yt.tolist()), np.int64, len(yt)),
            np.fromiter((index[v] for v in yp.tolist()), np.int64, len(yp)), classes)


def resolve_average(average: str, classes: list, pos_label: Any) -> tuple[str, int | None]:
    """('macro', None) or ('binary', index of the positive class)."""
    if average not in ("auto", "macro", "binary"):
        raise UsageError(f"average: got {average!r}; allowed: 'auto', 'macro', 'binary'")
    if average == "auto":
        average = "binary" if len(classes) == 2 else "macro"
    if average == "macro":
        return "macro", None
    if pos_label is None:
        if len(classes) > 2:
            raise UsageError(f"pos_label: required for binary metrics with classes {classes}")
        pos_label = classes[-1]
    if pos_label not in classes:
        raise UsageError(f"pos_label: {pos_label!r} is not in labels {classes}")
    return "binary", classes.index(pos_label)


def group_codes(sensitive: pd.DataFrame | pd.Series, columns: Sequence[str]
                ) -> tuple[np.ndarray, list[str]]:
    """Integer group code (n,) for the intersection of ``columns`` and the group names
    (``"white"`` for one column, ``"white&male"`` for several)."""
    df = sensitive.to_frame() if isinstance(sensitive, pd.Series) else sensitive
    cols = [df[c].astype(str).to_numpy(dtype=object) for c in columns]
    key = cols[0] if len(cols) == 1 else np.array(
        ["&".join(parts) for parts in zip(*cols, strict=True)], dtype=object)
    codes, uniques = pd.factorize(key, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


# ---------------------------------------------------------------------------------------------
# Per-group metrics: vectorised path (bootstrap) and fairlearn MetricFrame path (point estimates)


def _class_rates(tp, fp, fn, tn, present, mode: str, pos: int | None) -> dict[str, np.ndarray]:
    """Arrays (..., K) of counts -> (...,) metric arrays, macro over present classes or binary."""
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        per = {
            "accuracy": (tp + tn) / n,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "tpr": tp / (tp + fn),
            "fpr": fp / (fp + tn),
            "fdr": fp / (tp + fp),
        }
    out = {}
    for name, v in per.items():
        if mode == "binary":
            out[name] = v[..., pos]
            continue
        v = np.where(present, v, np.nan)
        ok = np.isfinite(v)
        cnt = ok.sum(-1)
        with np.errstate(invalid="ignore"):
            out[name] = np.where(cnt > 0, np.where(ok, v, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)
    return out


def rates_from_confusion(cm: np.ndarray, mode: str = "macro", pos: int | None = None
                         ) -> dict[str, np.ndarray]:
    """Confusion matrices (G, K, K) [true, pred] -> (G,) accuracy, f1, tpr, fpr, fdr and n."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)                      # (G, K)
    true_c = cm.sum(2)                                          # (G, K) support
    pred_c = cm.sum(1)                                          # (G, K) predicted
    n = cm.sum((1, 2))                                          # (G,)
    fp = pred_c - tp
    fn = true_c - tp
    tn = n[:, None] - tp - fp - fn
    present = (true_c + pred_c) > 0
    out = _class_rates(tp, fp, fn, tn, present, mode, pos)
    out["n"] = n
    return out


def fast_group_metrics(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int, K: int,
                       mode: str = "macro", pos: int | None = None) -> dict[str, np.ndarray]:
    """(n_groups,) arrays of accuracy, f1, tpr, fpr, fdr and n, counted with one ``np.bincount``.

    yt, yp: int class codes (n,) in [0, K); g: int group codes (n,) in [0, n_groups).
    """
    cm = np.bincount((g * K + yt) * K + yp, minlength=n_groups * K * K).reshape(n_groups, K, K)
    return rates_from_confusion(cm, mode, pos)


def metricframe_group_metrics(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int,
                              K: int, mode: str = "macro", pos: int | None = None
                              ) -> dict[str, np.ndarray]:
    """Same as :func:`fast_group_metrics`, with the per-group confusion matrices from fairlearn's
    ``MetricFrame`` and sklearn's ``confusion_matrix`` (the point-estimate path)."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import confusion_matrix

    labels = list(range(K))

    def cm(y_true, y_pred):
        return confusion_matrix(y_true, y_pred, labels=labels)

    mf = MetricFrame(metrics={"cm": cm}, y_true=yt, y_pred=yp,
                     sensitive_features=pd.Series(g, name="group"))
    mats = np.zeros((n_groups, K, K))
    for gi, mat in mf.by_group["cm"].items():
        mats[int(gi)] = mat
    return rates_from_confusion(mats, mode, pos)


# ---------------------------------------------------------------------------------------------
# Summaries


def _spread(values: np.ndarray) -> tuple[float, float]:
    """(sample std, max - min) over groups; NaN with fewer than two finite values."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return float("nan"), float("nan")
    return float(np.std(v, ddof=1)), float(v.max() - v.min())


def attribute_summary(gm: dict[str, np.ndarray], overall: dict[str, float],
                      min_group_size: int) -> dict[str, float]:
    """Headline metrics for one attribute from its per-group arrays (groups >= min size)."""
    ok = gm["n"] >= min_group_size
    f1_std, f1_gap = _spread(gm["f1"][ok])
    acc_std, acc_gap = _spread(gm["accuracy"][ok])
    _, pp_gap = _spread(gm["fdr"][ok])
    _, eod = _spread(gm["tpr"][ok])
    return {"pp_gap": pp_gap, "eod": eod, "f1_std": f1_std, "f1_gap": f1_gap,
            "es_f1": overall["f1"] / (1 + f1_std), "acc_std": acc_std, "acc_gap": acc_gap,
            "es_acc": overall["accuracy"] / (1 + acc_std)}


def _nanmean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _scalars(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size, group_fn,
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
            gm = group_fn(yt[m], yp[m], codes[m], len(names), K, mode, pos)
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
            groups[aname] = (names, group_fn(yt, yp, codes, len(names), K, mode, pos))
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
                             metricframe_group_metrics, with_groups=True)
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
        report.update(bootstrap_ci(yt, yp, K, mode, pos, attrs, ds_code, ds_names,
                                   min_group_size, list(point), n_boot, seed, confidence))
    report["too_small"] = too_small
    return report


def bootstrap_ci(yt, yp, K, mode, pos, attrs, ds_code, ds_names, min_group_size, keys, n_boot,
                 seed, confidence=0.95) -> dict[str, float]:
    """Percentile bootstrap over samples: ``<key>/ci_low`` and ``<key>/ci_high``."""
    rng = np.random.default_rng(seed)
    n = len(yt)
    draws = {k: np.full(n_boot, np.nan) for k in keys}
    for b in range(n_boot):
        i = rng.integers(0, n, n)
        rattrs = [(a, c[i], names) for a, c, names in attrs]
        vals, _ = _scalars(yt[i], yp[i], K, mode, pos, rattrs, ds_code[i], ds_names,
                           min_group_size, fast_group_metrics, with_groups=False)
        for k in keys:
            draws[k][b] = vals.get(k, np.nan)
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out = {}
    for k, v in draws.items():
        v = v[np.isfinite(v)]
        if v.size < max(10, n_boot // 2):  # undefined in most resamples: no CI
            continue
        out[f"{k}/ci_low"] = float(np.percentile(v, lo_q))
        out[f"{k}/ci_high"] = float(np.percentile(v, hi_q))
    return out


# ---------------------------------------------------------------------------------------------
# fairlearn's own between-group differences (for the CLI's fairlearn-named keys)


def fairlearn_differences(y_true: Any, y_pred: Any, groups: Any, labels: Sequence | None = None,
                          average: Average = "auto", pos_label: Any = None) -> dict[str, float]:
    """fairlearn ``demographic_parity_difference``, ``equalized_odds_difference`` and
    ``equal_opportunity_difference`` over ``groups`` (n,). Binary: fairlearn's numbers on
    ``pos_label``; multiclass: the mean over classes of the one-vs-rest differences."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        equal_opportunity_difference,
        equalized_odds_difference,
    )

    yt, yp, classes = encode_labels(y_true, y_pred, labels)
    mode, pos = resolve_average(average, classes, pos_label)
    targets = [pos] if mode == "binary" else list(range(len(classes)))
    g = np.asarray(groups, dtype=object)
    res: dict[str, list[float]] = {"demographic_parity_difference": [],
                                   "equalized_odds_difference": [],
                                   "equal_opportunity_difference": []}
    for c in targets:
        t, p = (yt == c).astype(int), (yp == c).astype(int)
        res["demographic_parity_difference"].append(
            demographic_parity_difference(t, p, sensitive_features=g))
        res["equalized_odds_difference"].append(
            equalized_odds_difference(t, p, sensitive_features=g))
        res["equal_opportunity_difference"].append(
            equal_opportunity_difference(t, p, sensitive_features=g))
    return {k: float(np.mean(v)) for k, v in res.items()}
