"""``METRICS``: the one registry of per-group metrics (plain callables, MetricFrame-style).

A per-group metric is a callable over named columns of the rows of one group, returning a
float (NaN when undefined for that group)::

    @METRICS.register("fnr")
    @confusion_rate
    def fnr(tp, fp, fn, tn):
        "false negative rate FN/(TP+FN)"
        return fn, tp + fn

    @METRICS.register("mean_length_of_stay")
    def mean_length_of_stay(los):
        "mean length of stay"
        return mean(los)

:class:`fairness.frame.MetricFrame` passes each metric the columns its parameters name
(``y_true``, ``y_pred``, ``y_score``, ``treated``, ...) and the keyword parameters it accepts
(``labels``, ``average``, ``pos_label``, ``zero_division``). Adding a fairness metric is one
entry here; its disparities come from the aggregators (``fairness.aggregate``).

Classification rates (one-vs-rest per class; binary: the positive class; macro: the mean over
classes present, as ``fairness.confusion`` describes):

==================  ===============================================
``selection_rate``  (TP+FP)/n: share predicted as the class
``accuracy``        (TP+TN)/n
``f1``              2TP/(2TP+FP+FN)  (macro: sklearn's macro F1)
``tpr``             TP/(TP+FN)  (recall; equal opportunity)
``fpr``             FP/(FP+TN)
``fdr``             FP/(TP+FP) = 1 - PPV  (predictive parity)
``auroc``           P(score of a positive > score of a negative), ties 1/2
==================  ===============================================

Hospital allocation (``envs.hospital``): ``treatment_rate`` P(treated), ``success_rate``
P(success | treated), ``mean_wait``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from base.registry import Registry
from fairness.confusion import ConfusionRate

METRICS: Registry[Callable[..., float]] = Registry("fairness metric")


def confusion_rate(formula) -> ConfusionRate:
    """Decorator: ``formula(tp, fp, fn, tn) -> (numerator, denominator)`` -> a rate."""
    return ConfusionRate(formula)


def mean(x: np.ndarray) -> float:
    """Mean of a group's values; NaN for an empty group."""
    x = np.asarray(x)
    return float(np.mean(x)) if x.size else float("nan")


# --------------------------------------------------------------------- classification
@METRICS.register("selection_rate")
@confusion_rate
def selection_rate(tp, fp, fn, tn):
    """selection rate (TP+FP)/n: share of rows predicted as the class"""
    return tp + fp, tp + fp + fn + tn


@METRICS.register("accuracy")
@confusion_rate
def accuracy(tp, fp, fn, tn):
    """accuracy (TP+TN)/n"""
    return tp + tn, tp + fp + fn + tn


@METRICS.register("f1")
@confusion_rate
def f1(tp, fp, fn, tn):
    """F1 2TP/(2TP+FP+FN) (macro over present classes: sklearn's macro F1)"""
    return 2 * tp, 2 * tp + fp + fn


@METRICS.register("tpr")
@confusion_rate
def tpr(tp, fp, fn, tn):
    """true positive rate (recall) TP/(TP+FN)"""
    return tp, tp + fn


@METRICS.register("fpr")
@confusion_rate
def fpr(tp, fp, fn, tn):
    """false positive rate FP/(FP+TN)"""
    return fp, fp + tn


@METRICS.register("fdr")
@confusion_rate
def fdr(tp, fp, fn, tn):
    """false discovery rate FP/(TP+FP) = 1 - PPV"""
    return fp, tp + fp


@METRICS.register("auroc")
def auroc(y_true, y_score) -> float | np.ndarray:
    """AUROC of a score for binary y_true in {0, 1} (Mann-Whitney; ties count 1/2)

    y_true, y_score: shape (..., n), leading axes are batches -> shape (...,). NaN when
    the rows hold only one class.
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    n1 = y.sum(-1)
    n0 = y.shape[-1] - n1
    ranks = rankdata(s, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = ((ranks * y).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    value = np.where((n1 > 0) & (n0 > 0), value, np.nan)
    return float(value) if value.ndim == 0 else value


# --------------------------------------------------------------------- hospital allocation
@METRICS.register("treatment_rate")
def treatment_rate(treated) -> float:
    """treatment rate P(treated)"""
    return mean(treated)


@METRICS.register("success_rate")
def success_rate(success, treated) -> float:
    """success rate among the treated P(success | treated)"""
    return mean(np.asarray(success)[np.asarray(treated, dtype=bool)])


@METRICS.register("mean_wait")
def mean_wait(wait) -> float:
    """mean wait"""
    return mean(wait)
