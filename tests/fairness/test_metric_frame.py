"""fairness.MetricFrame and the METRICS registry: hand-computed groups, intersections, a
custom metric, minimum group sizes, and the vectorised counts against a loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from base.errors import UsageError
from base.registry import RegistryError
from fairness import METRICS, Groups, MetricFrame
from fairness.confusion import confusion_counts
from fairness.metrics import confusion_rate

# group a: 4 positives, 3 found (TPR 3/4), 2 negatives, 1 false alarm (FPR 1/2), 4 of 6 selected
# group b: 2 positives, 1 found (TPR 1/2), 2 negatives, none selected (FPR 0), 1 of 4 selected
Y = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0])
P = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0])
G = np.array(["a"] * 6 + ["b"] * 4)


def test_known_tpr_gap_by_group_and_aggregates():
    mf = MetricFrame(["tpr", "fpr", "selection_rate"], G, y_true=Y, y_pred=P)
    by = mf.by_group
    assert list(by.index) == ["a", "b"]
    assert by.loc["a", "tpr"] == 0.75 and by.loc["b", "tpr"] == 0.5
    assert by.loc["a", "fpr"] == 0.5 and by.loc["b", "fpr"] == 0.0
    assert by.loc["a", "selection_rate"] == pytest.approx(4 / 6)
    assert by.loc["b", "selection_rate"] == 0.25
    assert mf.overall["tpr"] == pytest.approx(4 / 6)  # 4 of 6 positives found
    assert mf.difference()["tpr"] == pytest.approx(0.25)
    assert mf.ratio()["tpr"] == pytest.approx(2 / 3)
    assert mf.group_min()["fpr"] == 0.0 and mf.group_max()["fpr"] == 0.5
    assert mf.std()["tpr"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert mf.max_deviation()["tpr"] == pytest.approx(4 / 6 - 0.5)  # b is further from overall
    assert mf.equity_scaled()["tpr"] == pytest.approx((4 / 6) / (1 + np.std([0.75, 0.5], ddof=1)))


def test_intersectional_groups_are_multi_column_keys():
    s = pd.DataFrame({"race": ["white", "white", "black", "black"] * 2,
                      "sex": ["male", "female"] * 4})
    y = np.array([1, 0, 1, 1, 0, 1, 1, 0])
    mf = MetricFrame("accuracy", s, y_true=y, y_pred=np.ones(8, int))
    assert list(mf.by_group.index) == ["black&female", "black&male", "white&female", "white&male"]
    # black&male: y = 1, 1 (both right); the other intersections: one of two right
    assert mf.by_group["accuracy"].tolist() == [0.5, 1.0, 0.5, 0.5]
    assert mf.counts.tolist() == [2, 2, 2, 2]


def test_groups_without_rows_and_small_groups():
    groups = Groups(np.array([0, 0, 0, 1]), ["a", "b", "empty"])
    mf = MetricFrame("mean_wait", groups, min_group_size=2, wait=np.array([1.0, 2.0, 3.0, 10.0]))
    assert mf.by_group["mean_wait"].tolist()[:2] == [2.0, 10.0]
    assert math.isnan(mf.by_group["mean_wait"]["empty"])
    assert mf.counts.tolist() == [3, 1, 0] and mf.too_small == ["b (n=1)"]
    assert math.isnan(mf.difference()["mean_wait"])  # only one reportable group left
    assert MetricFrame("mean_wait", groups, wait=np.array([1.0, 2, 3, 10])).difference()[
        "mean_wait"] == 8.0


def test_registered_custom_metrics_show_up_in_by_group_and_difference(monkeypatch):
    # a scratch copy of the registry, so the entries vanish after the test
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    monkeypatch.setattr(METRICS, "_help", dict(METRICS._help))

    @METRICS.register("fnr")
    @confusion_rate
    def fnr(tp, fp, fn, tn):
        """false negative rate FN/(TP+FN)"""
        return fn, tp + fn

    @METRICS.register("mean_age")
    def mean_age(age):
        """mean age"""
        return float(np.mean(age))

    age = np.array([30, 40, 50, 60, 70, 80, 20, 20, 30, 30])
    mf = MetricFrame(["fnr", "mean_age"], G, y_true=Y, y_pred=P, age=age)
    assert mf.by_group.loc["a", "fnr"] == 0.25 and mf.by_group.loc["b", "fnr"] == 0.5
    assert mf.difference() == pytest.approx({"fnr": 0.25, "mean_age": 55 - 25})
    assert METRICS.help("fnr") == "false negative rate FN/(TP+FN)"
    with pytest.raises(RegistryError, match="already registered"):
        METRICS.register("fnr", fnr)


def test_registry_lists_the_metrics_and_names_unknown_ones():
    assert {"selection_rate", "accuracy", "f1", "tpr", "fpr", "fdr", "auroc", "treatment_rate",
            "success_rate", "mean_wait"} <= set(METRICS.names())
    assert all(METRICS.help(n) for n in METRICS.names())
    with pytest.raises(RegistryError, match="unknown fairness metric 'ppv'; known: accuracy"):
        MetricFrame("ppv", G, y_true=Y, y_pred=P)


def test_missing_column_and_bad_lengths_name_the_problem():
    with pytest.raises(UsageError, match="needs a column 'y_pred'"):
        MetricFrame("tpr", G, y_true=Y)
    with pytest.raises(UsageError, match="lengths y_pred"):
        MetricFrame("tpr", G, y_true=Y, y_pred=P[:5])


def test_auroc_equals_sklearn_by_group():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(0.4 * y + rng.random(300), 1)  # ties
    g = rng.choice(["x", "y", "z"], 300)
    mf = MetricFrame("auroc", g, y_true=y, y_score=score)
    for name in ("x", "y", "z"):
        m = g == name
        assert mf.by_group.loc[name, "auroc"] == pytest.approx(roc_auc_score(y[m], score[m]),
                                                               abs=1e-12)
    assert math.isnan(MetricFrame("auroc", g, y_true=np.ones(300), y_score=score).overall["auroc"])


def test_batched_confusion_counts_equal_a_loop():
    rng = np.random.default_rng(2)
    B, n, Gn, K = 4, 50, 3, 3
    yt, yp, g = rng.integers(0, K, (B, n)), rng.integers(0, K, (B, n)), rng.integers(0, Gn, (B, n))
    cm = confusion_counts(yt, yp, g, Gn, K)
    ref = np.zeros((B, Gn, K, K), int)
    for b in range(B):
        for i in range(n):
            ref[b, g[b, i], yt[b, i], yp[b, i]] += 1
    np.testing.assert_array_equal(cm, ref)
