"""Per-group rates from one-vs-rest confusion counts: the package's vectorised fast path.

One ``np.bincount`` counts a confusion matrix per group (and per bootstrap resample); every
classification rate is then a :class:`ConfusionRate`, a formula ``(tp, fp, fn, tn) ->
(numerator, denominator)`` applied to the per-class one-vs-rest counts. The formulas live in
the registry entries (``fairness.metrics``), once each; this module only counts, divides and
averages over classes:

* ``mode="binary"``: the rate of the positive class ``pos``;
* ``mode="macro"``: the mean over the classes present in the group, leaving out classes whose
  rate is undefined. "Present" is ``classes="observed"`` (in the group's y_true or y_pred;
  sklearn's ``average="macro"``) or ``classes="support"`` (in the group's y_true only: the
  FairGRPO authors' evaluation, which skips classes that never occur in the ground truth; a
  prediction of a class outside that set, e.g. an unparseable answer, is then a false
  negative of the true class and counts nowhere else).

A group with no rows is undefined (NaN). A present group whose denominator is 0 gets
``zero_division``: NaN (left out; the clinical report's convention) or 0.0 (fairlearn's and
sklearn's ``confusion_matrix(normalize="true")`` convention).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fairness.groups import encode_labels, resolve_average

NAN = float("nan")
Formula = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[Any, Any]]


def confusion_counts(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int,
                     n_classes: int) -> np.ndarray:
    """Confusion matrices [true, pred] per group, shape (..., G, K, K).

    yt, yp: int class codes in [0, K); g: int group codes in [0, G); all of shape (..., n),
    leading axes being batches (e.g. bootstrap resamples, each counted separately).
    """
    yt, yp, g = (np.asarray(a, dtype=np.int64) for a in (yt, yp, g))
    lead = yt.shape[:-1]
    batches = int(np.prod(lead)) if lead else 1
    G, K = n_groups, n_classes
    flat = (g * K + yt) * K + yp
    if lead:
        flat = flat + (np.arange(batches).reshape(lead)[..., None] * (G * K * K))
    counts = np.bincount(flat.ravel(), minlength=batches * G * K * K)
    return counts.reshape(*lead, G, K, K)


class ConfusionRate:
    """A per-group rate from one-vs-rest counts; ``formula(tp, fp, fn, tn)`` returns
    ``(numerator, denominator)`` on float arrays of shape (..., G, K).

    Callable as a plain per-group metric ``rate(y_true, y_pred, *, labels, average,
    pos_label, zero_division) -> float``; :meth:`grouped` gives every group at once (the
    path :class:`fairness.frame.MetricFrame` takes).
    """

    def __init__(self, formula: Formula):
        self.formula = formula
        self.__name__ = formula.__name__
        self.__doc__ = formula.__doc__  # the registry's help line

    def per_class(self, tp, fp, fn, tn, zero_division: float = NAN) -> np.ndarray:
        """Per-class rates, shape (..., G, K)."""
        num, den = self.formula(tp, fp, fn, tn)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = num / den
        return np.where(den == 0, zero_division, value)

    def __call__(self, y_true, y_pred, *, labels: Sequence | None = None, average: str = "auto",
                 pos_label: Any = None, zero_division: float = NAN) -> float:
        return float(self.grouped(np.zeros(len(y_true), np.int64), 1, y_true, y_pred,
                                  labels=labels, average=average, pos_label=pos_label,
                                  zero_division=zero_division)[0])

    def grouped(self, codes: np.ndarray, n_groups: int, y_true, y_pred, *,
                labels: Sequence | None = None, average: str = "auto", pos_label: Any = None,
                zero_division: float = NAN) -> np.ndarray:
        """The rate of every group, shape (n_groups,); labels are encoded over all rows."""
        yt, yp, classes = encode_labels(y_true, y_pred, labels)
        mode, pos = resolve_average(average, classes, pos_label)
        out = group_rates(yt, yp, codes, n_groups, max(len(classes), 1), {"v": self}, mode, pos,
                          zero_division)
        return out["v"]


def one_vs_rest(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Confusion matrices (..., G, K, K) -> tp, fp, fn, tn, present (..., G, K) and n (..., G)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)                    # (..., G, K)
    true_c = cm.sum(-1)                                         # support
    pred_c = cm.sum(-2)                                         # predicted
    n = cm.sum((-2, -1))                                        # (..., G)
    fp = pred_c - tp
    fn = true_c - tp
    tn = n[..., None] - tp - fp - fn
    return tp, fp, fn, tn, (true_c + pred_c) > 0, n


def average_classes(values: np.ndarray, present: np.ndarray, mode: str, pos: int | None
                    ) -> np.ndarray:
    """Per-class rates (..., K) -> (...,): the positive class, or the mean over present
    classes with a defined rate."""
    if mode == "binary":
        return values[..., pos]
    v = np.where(present, values, np.nan)
    ok = np.isfinite(v)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, np.where(ok, v, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def rates_from_confusion(cm: np.ndarray, rates: Mapping[str, ConfusionRate], mode: str = "macro",
                         pos: int | None = None, zero_division: float = NAN,
                         per_class: bool = False, classes: str = "observed"
                         ) -> dict[str, np.ndarray]:
    """Confusion matrices (..., G, K, K) -> {name: (..., G)} (or (..., G, K) per class with
    ``per_class``) for every rate in ``rates``, plus ``n`` (..., G). ``classes``: which
    classes a macro average runs over (module docstring)."""
    tp, fp, fn, tn, present, n = one_vs_rest(cm)
    if classes == "support":
        present = (tp + fn) > 0
    elif classes != "observed":
        raise ValueError(f"classes: got {classes!r}; allowed: observed, support")
    absent = (n == 0)[..., None]
    out: dict[str, np.ndarray] = {}
    for name, rate in rates.items():
        v = np.where(absent, np.nan, rate.per_class(tp, fp, fn, tn, zero_division))
        out[name] = v if per_class else average_classes(v, present, mode, pos)
    out["n"] = n
    return out


def group_rates(yt: np.ndarray, yp: np.ndarray, g: np.ndarray, n_groups: int, n_classes: int,
                rates: Mapping[str, ConfusionRate], mode: str = "macro", pos: int | None = None,
                zero_division: float = NAN, per_class: bool = False, classes: str = "observed"
                ) -> dict[str, np.ndarray]:
    """Codes (..., n) -> {name: (..., G)} rates and ``n``, from one ``np.bincount``."""
    cm = confusion_counts(yt, yp, g, n_groups, n_classes)
    return rates_from_confusion(cm, rates, mode, pos, zero_division, per_class, classes)
