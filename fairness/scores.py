"""Scalar fairness metrics: thin wrappers over the per-group metrics and the aggregators.

Naming rule: ``*_difference`` / ``*_gap`` -- lower is fairer (0 = equal groups);
``*_score`` -- higher is fairer (1 = equal groups).

fairlearn's definitions (binary: identical to ``fairlearn.metrics``; multiclass: the mean over
classes of the one-vs-rest values; an undefined rate of a present group counts as 0, as in
fairlearn; a group absent from a resample is left out):

* ``demographic_parity_difference``  max - min selection rate
* ``equal_opportunity_difference``   max - min TPR
* ``equalized_odds_difference``      max(TPR difference, FPR difference)

The clinical report's definition (per group averaged over classes first, undefined rates
left out): ``predictive_parity_difference`` = max - min FDR (1 - PPV).

The hospital's scores (``envs.hospital``): ``dp_score`` = 1 - max_g |P(treat | g) -
P(treat)|, ``eo_score`` = 1 - max_g |P(success | treat, g) - P(success | treat)|,
``wte_score`` = 1 - CV(mean wait by group) (population std / mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fairness import aggregate
from fairness.confusion import group_rates
from fairness.frame import MetricFrame
from fairness.groups import Groups, encode_labels, resolve_average
from fairness.metrics import METRICS

DIFFERENCES = ("demographic_parity_difference", "equalized_odds_difference",
               "equal_opportunity_difference")


def differences_from_codes(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int,
                           n_classes: int, mode: str = "binary", pos: int | None = 1
                           ) -> dict[str, Any]:
    """fairlearn's three differences from codes of shape (..., n) -> floats or (...,) arrays.

    yt, yp: int class codes in [0, n_classes); g: int group codes in [0, n_groups); leading
    axes are batches (bootstrap resamples). ``mode``: ``binary`` (class ``pos``) or ``macro``
    (mean over all classes).
    """
    rates = {m: METRICS.get(m) for m in ("selection_rate", "tpr", "fpr")}
    r = group_rates(yt, yp, g, n_groups, n_classes, rates, zero_division=0.0, per_class=True)
    per_class = {m: np.moveaxis(r[m], -1, -2) for m in rates}  # (..., K, G)
    gap = {m: np.asarray(aggregate.difference(v, min_groups=1)) for m, v in per_class.items()}
    out = {"demographic_parity_difference": gap["selection_rate"],
           "equalized_odds_difference": np.maximum(gap["tpr"], gap["fpr"]),
           "equal_opportunity_difference": gap["tpr"]}
    pick = (lambda v: v[..., pos]) if mode == "binary" else (lambda v: v.mean(-1))
    return {k: float(pick(v)) if np.ndim(pick(v)) == 0 else pick(v) for k, v in out.items()}


def fairlearn_differences(y_true: Any, y_pred: Any, sensitive_features: Any,
                          labels: Sequence | None = None, average: str = "auto",
                          pos_label: Any = None) -> dict[str, float]:
    """The three fairlearn differences over the groups of ``sensitive_features``."""
    yt, yp, classes = encode_labels(y_true, y_pred, labels)
    mode, pos = resolve_average(average, classes, pos_label)
    groups = Groups.of(sensitive_features)
    return differences_from_codes(yt, yp, groups.codes, len(groups), max(len(classes), 1),
                                  mode, pos)


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, labels=None,
                                  average="auto", pos_label=None) -> float:
    """max - min over groups of the selection rate (fairlearn's definition)."""
    return fairlearn_differences(y_true, y_pred, sensitive_features, labels, average,
                                 pos_label)["demographic_parity_difference"]


def equalized_odds_difference(y_true, y_pred, *, sensitive_features, labels=None,
                              average="auto", pos_label=None) -> float:
    """max(TPR difference, FPR difference) over groups (fairlearn's worst case)."""
    return fairlearn_differences(y_true, y_pred, sensitive_features, labels, average,
                                 pos_label)["equalized_odds_difference"]


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, labels=None,
                                 average="auto", pos_label=None) -> float:
    """max - min over groups of the TPR (fairlearn's definition)."""
    return fairlearn_differences(y_true, y_pred, sensitive_features, labels, average,
                                 pos_label)["equal_opportunity_difference"]


def predictive_parity_difference(y_true, y_pred, *, sensitive_features, labels=None,
                                 average="auto", pos_label=None, min_group_size: int = 1
                                 ) -> float:
    """max - min over groups of the FDR (1 - PPV), groups of at least ``min_group_size``."""
    frame = MetricFrame("fdr", sensitive_features, y_true=y_true, y_pred=y_pred,
                        min_group_size=min_group_size,
                        params={"labels": labels, "average": average, "pos_label": pos_label})
    return float(frame.difference()["fdr"])


# --------------------------------------------------------------------- scores (higher is fairer)
def parity_score(frame: MetricFrame, metric: str) -> float:
    """1 - max_g |metric(g) - metric(overall)|; 1.0 when no group is defined."""
    return aggregate.as_score(aggregate.max_deviation(frame.values(metric),
                                                      frame.overall[metric]))


def equity_score(frame: MetricFrame, metric: str) -> float:
    """1 - CV of the metric over groups; 1.0 with fewer than two groups or a mean <= 0."""
    return aggregate.as_score(aggregate.coefficient_of_variation(frame.values(metric)))


def dp_score(treated, *, sensitive_features) -> float:
    """Demographic parity of treatment: 1 - max_g |P(treat | g) - P(treat)|."""
    frame = MetricFrame("treatment_rate", sensitive_features, treated=treated)
    return parity_score(frame, "treatment_rate")


def eo_score(success, treated, *, sensitive_features) -> float:
    """Equalized odds of outcome: 1 - max_g |P(success | treat, g) - P(success | treat)|."""
    frame = MetricFrame("success_rate", sensitive_features, success=success, treated=treated)
    return parity_score(frame, "success_rate")


def wte_score(wait, *, sensitive_features) -> float:
    """Wait-time equity: 1 - CV(mean wait by group)."""
    frame = MetricFrame("mean_wait", sensitive_features, wait=wait)
    return equity_score(frame, "mean_wait")
