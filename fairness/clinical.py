"""Clinical fairness metrics as the FairGRPO authors compute them (arXiv 2510.19893).

The reference is the authors' evaluation, ``examples/reward_function/evaluation.py``
(``compute_metrics_by_data_source``) of ``DDVD233/mirl`` at 16860b9; this module reproduces
its numbers (``tests/fairness/test_clinical_metrics.py`` ports it as a loop and compares):

* **Per group** (one value of one sensitive attribute): one-vs-rest confusion counts per class
  (``fairness.confusion``, one ``np.bincount``), the registered rates ``accuracy, f1, tpr,
  fpr, fdr`` per class with 0/0 = 0, averaged with equal class weight over the classes that
  occur in the group's ground truth (``classes="support"``). A prediction outside those
  classes, e.g. an unparseable answer (the caller passes it as a label of its own, like
  ``"(invalid)"``), is a false negative of the true class and predicts no class. ``accuracy``
  here is that mean one-vs-rest accuracy (TP+TN)/n, the authors' "accuracy".
* **Per attribute** (sex, age band, ... each on its own; never intersected unless the caller
  passes an intersection column), over its non-empty groups (``min_group_size``, default 1 as
  the authors; larger values drop small groups and report them as ``too_small``); at least
  two groups, else the attribute is skipped (NaN)::

      pp_gap = difference(FDR)   eod = difference(TPR)   fpr_gap = difference(FPR)
      f1_gap = difference(F1)    f1_std = std(F1) (sample, ddof=1)   f1_mean = mean(F1)
      acc_gap, acc_std, acc_mean likewise;   es_f1 = f1_mean / (1 + f1_std), es_acc likewise

* **Per dataset** (data source): the mean over its attributes; **overall**: the mean over
  datasets. ``es_f1``/``es_acc`` at those levels are recomputed from the averaged mean and
  std (``f1_mean / (1 + f1_std)``, the authors' ``overall/f1_es``), not averaged.
* ``overall/f1``, ``overall/accuracy``: per dataset over all its rows (same class rule),
  averaged over datasets (the authors' ``val/f1``, ``val/accuracy``).

Confidence intervals: ``fairness.bootstrap`` (resampling samples with replacement,
percentile). fairlearn's own differences are ``fairness.scores.fairlearn_differences``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from base.errors import UsageError
from fairness.aggregate import difference, std
from fairness.bootstrap import bootstrap_ci
from fairness.confusion import group_rates
from fairness.groups import Average, encode_labels, group_codes, resolve_average
from fairness.metrics import METRICS

GROUP_METRICS = ("accuracy", "f1", "tpr", "fpr", "fdr")
HEADLINE = ("pp_gap", "eod", "fpr_gap", "f1_std", "f1_gap", "f1_mean", "es_f1", "acc_std",
            "acc_gap", "acc_mean", "es_acc")
AVERAGED = tuple(h for h in HEADLINE if not h.startswith("es_"))  # es_*: from the averages


class ReportDict(dict):
    """The report: flat ``name -> float`` metrics plus one non-metric key, ``"too_small"``
    (list of ``"attr=group (n=K)"``). ``metrics()`` returns only the floats."""

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.items() if isinstance(v, float)}


def fast_group_metrics(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int, K: int,
                       mode: str = "macro", pos: int | None = None, classes: str = "support"
                       ) -> dict[str, np.ndarray]:
    """(n_groups,) arrays of accuracy, f1, tpr, fpr, fdr and n, counted with one ``np.bincount``
    (the module's class rule; ``classes="observed"``: sklearn's macro average, NaN for 0/0).

    yt, yp: int class codes (n,) in [0, K); g: int group codes (n,) in [0, n_groups).
    """
    zero = 0.0 if classes == "support" else float("nan")
    return group_rates(yt, yp, g, n_groups, K, {m: METRICS.get(m) for m in GROUP_METRICS},
                       mode, pos, zero_division=zero, classes=classes)


def _with_es(vals: dict[str, float]) -> dict[str, float]:
    """Add ``es_f1``/``es_acc`` = mean / (1 + std) of the (averaged) values."""
    return {**vals, "es_f1": vals["f1_mean"] / (1.0 + vals["f1_std"]),
            "es_acc": vals["acc_mean"] / (1.0 + vals["acc_std"])}


def attribute_summary(gm: dict[str, np.ndarray], min_group_size: int) -> dict[str, float]:
    """Headline metrics for one attribute from its per-group arrays (non-empty groups of at
    least ``min_group_size``; NaN throughout with fewer than two)."""
    ok = (gm["n"] >= max(min_group_size, 1))
    if int(ok.sum()) < 2:
        return dict.fromkeys(HEADLINE, float("nan"))
    f1, acc = gm["f1"][ok], gm["accuracy"][ok]
    return _with_es({"pp_gap": difference(gm["fdr"][ok]), "eod": difference(gm["tpr"][ok]),
                     "fpr_gap": difference(gm["fpr"][ok]), "f1_std": std(f1),
                     "f1_gap": difference(f1), "f1_mean": float(np.mean(f1)), "acc_std": std(acc),
                     "acc_gap": difference(acc), "acc_mean": float(np.mean(acc))})


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
        for aname, codes, names in attrs:  # missing values: code len(names), left out
            gm = fast_group_metrics(yt[m], yp[m], codes[m], len(names) + 1, K, mode, pos)
            per_attr[aname] = attribute_summary({k: v[:len(names)] for k, v in gm.items()},
                                                min_group_size)
        ds_vals = _with_es({h: _nanmean([per_attr[a][h] for a in per_attr]) for h in AVERAGED})
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
    means = _with_es({h: _nanmean([v[h] for v in per_ds.values()]) for h in AVERAGED})
    for h in HEADLINE:
        out[f"fairness/{h}"] = means[h]
    out["overall/f1"] = _nanmean([v["f1"] for v in per_ds.values()])
    out["overall/accuracy"] = _nanmean([v["accuracy"] for v in per_ds.values()])
    groups = {}
    if with_groups:
        for aname, codes, names in attrs:
            gm = fast_group_metrics(yt, yp, codes, len(names) + 1, K, mode, pos)
            groups[aname] = (names, {k: v[:len(names)] for k, v in gm.items()})
    return out, groups


def clinical_fairness_report(y_true: Any, y_pred: Any, sensitive: pd.DataFrame,
                             labels: Sequence | None = None, dataset: Any = None,
                             min_group_size: int = 1, ci: bool = False, n_boot: int = 200,
                             seed: int = 0, average: Average = "auto", pos_label: Any = None,
                             confidence: float = 0.95, missing: str = "error") -> ReportDict:
    """Flat MLflow-ready fairness report (see the module docstring for definitions).

    y_true, y_pred: (n,) class labels; sensitive: DataFrame (n, n_attributes), one column per
    attribute (make an intersection column, e.g. ``race&sex``, to treat it as one attribute);
    dataset: optional (n,) data source per sample. Keys: ``fairness/<headline>``,
    ``overall/f1``, ``overall/accuracy``, ``fairness/<attr>/<headline>`` (or
    ``fairness/dataset/<ds>/<attr>/<headline>`` and ``fairness/dataset/<ds>/<headline>`` with
    ``dataset``), ``fairness/by_group/<attr>=<group>/{accuracy,f1,tpr,fpr,fdr,n}`` for groups of
    at least ``min_group_size`` (pooled over datasets); with ``ci=True`` also
    ``<key>/ci_low`` and ``<key>/ci_high`` for every key except by_group. Non-metric key:
    ``too_small`` (list of ``"attr=group (n=K)"``). ``missing="skip"``: a row whose value of an
    attribute is missing (None/NaN) is left out of that attribute only (the authors skip
    samples whose sex or age cannot be read); ``"error"``: UsageError.
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
    if missing not in ("error", "skip"):
        raise UsageError(f"missing: got {missing!r}; allowed: error, skip")
    attrs = []
    for col in sens.columns:
        na = sens[col].isna().to_numpy()
        if na.any() and missing == "error":
            raise UsageError(f"sensitive: column {col!r} has missing values")
        codes, names = group_codes(sens.loc[~na, [col]], [col])
        full = np.full(len(sens), len(names), dtype=np.int64)
        full[~na] = codes
        attrs.append((str(col), full, names))
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
