"""fairness.scores against fairlearn (binary, random data with small groups), the clinical
report's definitions (multiclass), and the hospital's scores (hand-computed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairness import (
    MetricFrame,
    demographic_parity_difference,
    dp_score,
    eo_score,
    equal_opportunity_difference,
    equalized_odds_difference,
    fairlearn_differences,
    predictive_parity_difference,
    wte_score,
)
from fairness.clinical import clinical_fairness_report


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.integers(2, 5), st.integers(8, 80))
def test_binary_differences_equal_fairlearn_exactly(seed, n_groups, n):
    """Includes groups of one or two rows, without positives or without negatives (fairlearn
    counts their undefined TPR/FPR as 0)."""
    import fairlearn.metrics as fm

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    p = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    g = rng.choice([f"g{i}" for i in range(n_groups)], n, p=rng.dirichlet(np.ones(n_groups)))
    for ours, ref in ((demographic_parity_difference, fm.demographic_parity_difference),
                      (equalized_odds_difference, fm.equalized_odds_difference),
                      (equal_opportunity_difference, fm.equal_opportunity_difference)):
        assert ours(y, p, sensitive_features=g) == ref(y, p, sensitive_features=g), ours.__name__


def test_intersectional_features_equal_fairlearn():
    import fairlearn.metrics as fm

    rng = np.random.default_rng(0)
    n = 500
    s = pd.DataFrame({"race": rng.choice(["a", "b", "c"], n), "sex": rng.choice(["F", "M"], n)})
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    d = fairlearn_differences(y, p, s)
    assert d["equalized_odds_difference"] == fm.equalized_odds_difference(
        y, p, sensitive_features=s)
    assert d["demographic_parity_difference"] == fm.demographic_parity_difference(
        y, p, sensitive_features=s)


def test_multiclass_follows_the_clinical_report_and_one_vs_rest_fairlearn():
    import fairlearn.metrics as fm
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    n = 600
    yt = rng.choice(["flu", "covid", "normal"], n)
    yp = np.where(rng.random(n) < 0.6, yt, rng.choice(["flu", "covid", "normal"], n))
    sex = rng.choice(["F", "M"], n)
    rep = clinical_fairness_report(yt, yp, pd.DataFrame({"sex": sex}))
    mf = MetricFrame(["f1", "tpr", "fdr"], sex, y_true=yt, y_pred=yp)
    for g in ("F", "M"):
        m = sex == g
        assert mf.by_group.loc[g, "f1"] == pytest.approx(
            f1_score(yt[m], yp[m], average="macro"), abs=1e-12)
        for metric in ("f1", "tpr", "fdr"):
            assert mf.by_group.loc[g, metric] == rep[f"fairness/by_group/sex={g}/{metric}"]
    assert mf.difference()["f1"] == rep["fairness/sex/f1_gap"]
    assert mf.difference()["tpr"] == rep["fairness/sex/eod"]
    assert mf.std()["f1"] == rep["fairness/sex/f1_std"]
    # the authors' ES-F1 scales the mean group F1 (MetricFrame's equity_scaled: the overall)
    assert rep["fairness/sex/es_f1"] == pytest.approx(
        mf.by_group["f1"].mean() / (1 + mf.std()["f1"]), abs=1e-12)
    assert predictive_parity_difference(yt, yp, sensitive_features=sex) == rep[
        "fairness/sex/pp_gap"]
    # fairlearn-named keys: the mean over classes of the one-vs-rest binary values
    d = fairlearn_differences(yt, yp, sex)
    per_class = [fm.equalized_odds_difference((yt == c).astype(int), (yp == c).astype(int),
                                              sensitive_features=sex)
                 for c in ("covid", "flu", "normal")]
    assert d["equalized_odds_difference"] == pytest.approx(np.mean(per_class), abs=1e-15)


def test_predictive_parity_is_the_ppv_gap_on_binary_data():
    from fairlearn.metrics import MetricFrame as FairlearnFrame
    from sklearn.metrics import precision_score

    rng = np.random.default_rng(2)
    y, p, g = rng.integers(0, 2, 400), rng.integers(0, 2, 400), rng.choice(["a", "b", "c"], 400)
    ref = FairlearnFrame(metrics=precision_score, y_true=y, y_pred=p, sensitive_features=g)
    assert predictive_parity_difference(y, p, sensitive_features=g) == pytest.approx(
        ref.difference(), abs=1e-12)


def test_hospital_scores_hand_computed():
    # group a: 4 patients, 3 treated, 3 successes; group b: 2 patients, 1 treated, 0 successes
    group = np.array([0, 0, 0, 0, 1, 1])
    treated = np.array([1, 1, 1, 0, 1, 0], bool)
    success = np.array([1, 1, 1, 0, 0, 0], bool)
    wait = np.array([1, 1, 2, 4, 6, 6], float)
    p = 4 / 6
    assert dp_score(treated, sensitive_features=group) == pytest.approx(
        1 - max(abs(0.75 - p), abs(0.5 - p)))
    assert eo_score(success, treated, sensitive_features=group) == pytest.approx(
        1 - max(abs(1 - 0.75), abs(0 - 0.75)))
    means = np.array([2.0, 6.0])
    assert wte_score(wait, sensitive_features=group) == pytest.approx(
        1 - means.std() / means.mean())
    assert dp_score(np.ones(4, bool), sensitive_features=[0, 0, 1, 1]) == 1.0
    assert wte_score(np.zeros(4), sensitive_features=[0, 0, 1, 1]) == 1.0  # nobody waited
