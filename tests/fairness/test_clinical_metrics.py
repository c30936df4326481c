"""Clinical fairness metrics against sklearn, fairlearn and hand loops, on synthetic and real data."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from base.errors import UsageError
from fairness.clinical import GROUP_METRICS, HEADLINE, clinical_fairness_report, fast_group_metrics
from fairness.confusion import rates_from_confusion
from fairness.metrics import METRICS
from fairness.scores import fairlearn_differences


def metricframe_group_metrics(yt, yp, g, n_groups, K, mode="macro", pos=None):
    """Reference for :func:`fast_group_metrics`: the per-group confusion matrices from
    fairlearn's ``MetricFrame`` and sklearn's ``confusion_matrix`` (not ``np.bincount``)."""
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
    return rates_from_confusion(mats, {m: METRICS.get(m) for m in GROUP_METRICS}, mode, pos)


@pytest.fixture(scope="module")
def actg():
    """ACTG175 with a logistic regression's predictions (a simple real classifier)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from envs.cohorts import COHORTS, load_cohort

    spec = COHORTS["actg175"]
    df = load_cohort("actg175")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    pred = cross_val_predict(model, df[spec["features"]], df[spec["label"]], cv=3)
    return df, df[spec["label"]].to_numpy(), pred


def _macro_loop(yt, yp):
    """Per-class one-vs-rest rates averaged over classes present (the definition, as a loop)."""
    classes = sorted(set(yt) | set(yp))
    acc, f1, tpr, fpr, fdr = [], [], [], [], []
    for c in classes:
        tp = sum(1 for a, b in zip(yt, yp) if a == c and b == c)
        fp = sum(1 for a, b in zip(yt, yp) if a != c and b == c)
        fn = sum(1 for a, b in zip(yt, yp) if a == c and b != c)
        tn = len(yt) - tp - fp - fn
        acc.append((tp + tn) / len(yt))
        f1.append(2 * tp / (2 * tp + fp + fn))
        if tp + fn:
            tpr.append(tp / (tp + fn))
        if fp + tn:
            fpr.append(fp / (fp + tn))
        if tp + fp:
            fdr.append(fp / (tp + fp))
    mean = lambda v: statistics.fmean(v) if v else float("nan")
    return {"accuracy": mean(acc), "f1": mean(f1), "tpr": mean(tpr), "fpr": mean(fpr),
            "fdr": mean(fdr)}


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 10_000))
def test_fast_path_matches_metricframe_and_loop(K, G, seed):
    rng = np.random.default_rng(seed)
    n = 60
    yt = rng.integers(0, K, n)
    yp = np.where(rng.random(n) < 0.5, yt, rng.integers(0, K, n))
    g = rng.integers(0, G, n)
    fast = fast_group_metrics(yt, yp, g, G, K, "macro", classes="observed")
    mf = metricframe_group_metrics(yt, yp, g, G, K, "macro")
    for k in fast:
        np.testing.assert_allclose(fast[k], mf[k], rtol=1e-12, atol=1e-12, equal_nan=True)
    for gi in range(G):
        m = g == gi
        if not m.any():
            continue
        ref = _macro_loop(yt[m].tolist(), yp[m].tolist())
        for k, v in ref.items():
            np.testing.assert_allclose(fast[k][gi], v, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert fast["f1"][gi] == pytest.approx(f1_score(yt[m], yp[m], average="macro"), abs=1e-12)


def test_binary_matches_sklearn_and_fairlearn_on_actg175(actg):
    from fairlearn.metrics import MetricFrame, equal_opportunity_difference

    df, y, pred = actg
    rep = clinical_fairness_report(y, pred, df[["race", "gender"]])
    for attr in ("race", "gender"):
        mf = MetricFrame(metrics={"tpr": recall_score, "ppv": precision_score, "f1": f1_score,
                                  "acc": accuracy_score},
                         y_true=y, y_pred=pred, sensitive_features=df[attr])
        for g, row in mf.by_group.iterrows():
            key = f"fairness/by_group/{attr}={g}"
            assert rep[f"{key}/tpr"] == pytest.approx(row["tpr"], abs=1e-12)
            assert rep[f"{key}/fdr"] == pytest.approx(1 - row["ppv"], abs=1e-12)
            assert rep[f"{key}/f1"] == pytest.approx(row["f1"], abs=1e-12)
            assert rep[f"{key}/accuracy"] == pytest.approx(row["acc"], abs=1e-12)
            assert rep[f"{key}/n"] == (df[attr] == g).sum()
        diff = mf.difference()
        assert rep[f"fairness/{attr}/eod"] == pytest.approx(diff["tpr"], abs=1e-12)
        assert rep[f"fairness/{attr}/eod"] == pytest.approx(
            equal_opportunity_difference(y, pred, sensitive_features=df[attr]), abs=1e-12)
        assert rep[f"fairness/{attr}/pp_gap"] == pytest.approx(diff["ppv"], abs=1e-12)
        assert rep[f"fairness/{attr}/f1_gap"] == pytest.approx(diff["f1"], abs=1e-12)
        f1s = mf.by_group["f1"].to_numpy()
        assert rep[f"fairness/{attr}/f1_std"] == pytest.approx(statistics.stdev(f1s), abs=1e-12)
        assert rep[f"fairness/{attr}/es_f1"] == pytest.approx(
            np.mean(f1s) / (1 + statistics.stdev(f1s)), abs=1e-12)
    for h in HEADLINE:  # one dataset: the overall value is the mean over attributes
        if h.startswith("es_"):  # ... except es_*: mean / (1 + std) of the averaged values
            m, sd = (("f1_mean", "f1_std") if h == "es_f1" else ("acc_mean", "acc_std"))
            assert rep[f"fairness/{h}"] == pytest.approx(
                rep[f"fairness/{m}"] / (1 + rep[f"fairness/{sd}"]), abs=1e-12)
            continue
        assert rep[f"fairness/{h}"] == pytest.approx(
            (rep[f"fairness/race/{h}"] + rep[f"fairness/gender/{h}"]) / 2, abs=1e-12)
    assert rep["overall/f1"] == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert rep["overall/accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert rep["too_small"] == []
    assert all(isinstance(v, float) for v in rep.metrics().values())


def test_multiclass_and_intersectional_on_actg175(actg):
    df, _, _ = actg
    # a 3-class target: cd4 count tercile; predictions from a noisy copy
    rng = np.random.default_rng(0)
    yt = pd.qcut(df["cd40"], 3, labels=["low", "mid", "high"]).astype(str).to_numpy()
    yp = np.where(rng.random(len(yt)) < 0.7, yt, rng.choice(["low", "mid", "high"], len(yt)))
    inter = (df["race"] + "&" + df["gender"]).rename("race&gender").to_frame()
    rep = clinical_fairness_report(yt, yp, inter, labels=["low", "mid", "high"])
    for g in inter["race&gender"].unique():
        m = (inter["race&gender"] == g).to_numpy()
        assert rep[f"fairness/by_group/race&gender={g}/f1"] == pytest.approx(
            f1_score(yt[m], yp[m], average="macro"), abs=1e-12)
    f1s = [rep[f"fairness/by_group/race&gender={g}/f1"] for g in inter["race&gender"].unique()]
    assert rep["fairness/f1_gap"] == pytest.approx(max(f1s) - min(f1s), abs=1e-12)


def test_too_small_groups_are_excluded_and_listed():
    rng = np.random.default_rng(1)
    n = 200
    yt = rng.integers(0, 2, n)
    yp = np.where(rng.random(n) < 0.7, yt, 1 - yt)
    attr = np.array(["a"] * 100 + ["b"] * 95 + ["tiny"] * 5)
    yp[-5:] = 1 - yt[-5:]  # the tiny group is always wrong
    rep = clinical_fairness_report(yt, yp, pd.DataFrame({"site": attr}), min_group_size=10)
    assert rep["too_small"] == ["site=tiny (n=5)"]
    assert not any("site=tiny" in k for k in rep)
    ref = clinical_fairness_report(yt[:195], yp[:195], pd.DataFrame({"site": attr[:195]}))
    assert rep["fairness/site/f1_gap"] == pytest.approx(ref["fairness/site/f1_gap"])
    rep1 = clinical_fairness_report(yt, yp, pd.DataFrame({"site": attr}))  # the authors: no minimum
    assert rep1["too_small"] == []
    assert rep1["fairness/site/f1_gap"] > rep["fairness/site/f1_gap"]


def test_dataset_mean_then_overall_mean():
    rng = np.random.default_rng(2)
    n = 600
    yt = rng.integers(0, 3, n)
    yp = np.where(rng.random(n) < 0.6, yt, rng.integers(0, 3, n))
    sens = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "age": rng.choice(["y", "o"], n)})
    ds = np.where(np.arange(n) < 400, "derm", "xray")
    rep = clinical_fairness_report(yt, yp, sens, dataset=ds)
    subs = {d: clinical_fairness_report(yt[ds == d], yp[ds == d], sens[ds == d])
            for d in ("derm", "xray")}
    for h in HEADLINE:
        per_ds = []
        for d, sub in subs.items():
            assert rep[f"fairness/dataset/{d}/{h}"] == pytest.approx(sub[f"fairness/{h}"])
            per_ds.append(sub[f"fairness/{h}"])
        if not h.startswith("es_"):
            assert rep[f"fairness/{h}"] == pytest.approx(np.mean(per_ds))
    assert rep["fairness/es_f1"] == pytest.approx(  # the authors' overall/f1_es
        rep["fairness/f1_mean"] / (1 + rep["fairness/f1_std"]))


def test_bootstrap_ci(actg):
    df, y, pred = actg
    rep = clinical_fairness_report(y, pred, df[["race", "gender"]], ci=True, n_boot=60, seed=3)
    for key in [f"fairness/{h}" for h in HEADLINE] + ["overall/f1", "overall/accuracy"]:
        assert rep[f"{key}/ci_low"] <= rep[f"{key}/ci_high"]
    for key in ("overall/f1", "overall/accuracy", "fairness/es_acc"):
        assert rep[f"{key}/ci_low"] <= rep[key] <= rep[f"{key}/ci_high"]
    again = clinical_fairness_report(y, pred, df[["race", "gender"]], ci=True, n_boot=60, seed=3)
    assert again["fairness/eod/ci_low"] == rep["fairness/eod/ci_low"]
    assert not any(k.startswith("fairness/by_group") and "ci_" in k for k in rep)


# -- the FairGRPO authors' evaluation, ported as loops (DDVD233/mirl @ 16860b9,
# examples/reward_function/evaluation.py: compute_confusion_matrices, compute_dataset_metrics,
# gender(), age(), compute_metrics_by_data_source) for single-label answers --------------------

def _mirl_dataset_metrics(preds, gts):
    """compute_dataset_metrics: per class (the union of answers and predictions; an answer of
    "None" predicts nothing), skip classes without ground truth, 0/0 = 0, equal class weight."""
    conditions = set(gts) | {p for p in preds if p != "None"}
    acc = dict.fromkeys(("f1", "accuracy", "tpr", "fpr", "fdr"), 0.0)
    active = 0
    for c in conditions:
        tp = sum(1 for p, t in zip(preds, gts) if t == c and p == c)
        fn = sum(1 for p, t in zip(preds, gts) if t == c and p != c)
        fp = sum(1 for p, t in zip(preds, gts) if t != c and p == c)
        tn = len(gts) - tp - fn - fp
        if tp + fn == 0:
            continue
        active += 1
        div = lambda n, d: n / d if d else 0.0  # noqa: E731
        prec, rec = div(tp, tp + fp), div(tp, tp + fn)
        acc["f1"] += 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        acc["accuracy"] += div(tp + tn, tp + tn + fp + fn)
        acc["tpr"] += rec
        acc["fpr"] += div(fp, fp + tn)
        acc["fdr"] += div(fp, tp + fp)
    return {k: v / active for k, v in acc.items()} if active else acc


def _mirl_attribute(preds, gts, groups):
    """gender()/age(): each non-empty group, then gap = max - min, std = statistics.stdev,
    value = mean over groups; None with fewer than two groups (the authors' code skips it)."""
    per = {}
    for g in sorted({g for g in groups if g is not None}):
        idx = [i for i, x in enumerate(groups) if x == g]
        per[g] = _mirl_dataset_metrics([preds[i] for i in idx], [gts[i] for i in idx])
    if len(per) < 2:
        return None
    out = {}
    for name, key in (("f1", "f1"), ("acc", "accuracy"), ("tpr", "tpr"), ("fpr", "fpr"), ("fdr", "fdr")):
        v = [m[key] for m in per.values()]
        out[f"{name}_diff"], out[f"{name}_std"], out[name] = max(v) - min(v), statistics.stdev(v), statistics.fmean(v)
    return out


def _mirl_report(preds, gts, attrs, datasets):
    """compute_metrics_by_data_source: per dataset the mean over attributes, then over datasets;
    f1_es = overall_f1 / (1 + overall_f1_std) after the averaging."""
    per_ds = []
    for d in sorted(set(datasets)):
        idx = [i for i, x in enumerate(datasets) if x == d]
        res = [r for r in (_mirl_attribute([preds[i] for i in idx], [gts[i] for i in idx],
                                           [col[i] for i in idx]) for col in attrs.values()) if r]
        if res:
            per_ds.append({k: statistics.fmean(r[k] for r in res) for k in res[0]})
    out = {k: statistics.fmean(r[k] for r in per_ds) for k in per_ds[0]}
    out["f1_es"] = out["f1"] / (1 + out["f1_std"])
    out["acc_es"] = out["acc"] / (1 + out["acc_std"])
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.3))
def test_matches_the_authors_evaluation(seed, invalid_rate):
    """Same numbers as the authors' code on answers with unparseable ones, missing
    demographics, classes absent from some groups, tiny groups and several datasets."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 120))
    opts = ["no finding", "pneumonia", "effusion"]
    gts = [opts[i] for i in rng.choice(3, n, p=[0.6, 0.3, 0.1])]
    preds = [t if rng.random() < 0.6 else opts[rng.integers(3)] for t in gts]
    preds = ["None" if rng.random() < invalid_rate else p for p in preds]
    sex = [None if rng.random() < 0.1 else rng.choice(["F", "M"]) for _ in range(n)]
    band = [None if rng.random() < 0.1 else rng.choice(["<=25", "26-50", "51-75", ">75"],
                                                         p=[0.05, 0.45, 0.4, 0.1]) for _ in range(n)]
    ds = rng.choice(["cxr", "derm"], n).tolist()
    ref = _mirl_report(preds, gts, {"sex": sex, "age_band": band}, ds)
    yp = ["(invalid)" if p == "None" else p for p in preds]
    rep = clinical_fairness_report(gts, yp, pd.DataFrame({"sex": sex, "age_band": band}),
                                   labels=[*opts, "(invalid)"], dataset=ds, average="macro",
                                   missing="skip")
    for ours, theirs in (("pp_gap", "fdr_diff"), ("eod", "tpr_diff"), ("fpr_gap", "fpr_diff"),
                         ("f1_gap", "f1_diff"), ("f1_std", "f1_std"), ("f1_mean", "f1"),
                         ("es_f1", "f1_es"), ("acc_gap", "acc_diff"), ("acc_std", "acc_std"),
                         ("acc_mean", "acc"), ("es_acc", "acc_es")):
        assert rep[f"fairness/{ours}"] == pytest.approx(ref[theirs], abs=1e-12), ours


def test_an_unparseable_answer_predicts_no_class():
    """Invalid answers lower the true class's recall and count nowhere else: not an extra
    class (which would add its own F1 of 0 to the average) and not a wrong class."""
    gts = ["a", "b"] * 10
    right = list(gts)
    some_invalid = ["(invalid)" if i < 4 else p for i, p in enumerate(right)]
    sens = pd.DataFrame({"s": ["x"] * 10 + ["y"] * 10})
    rep = clinical_fairness_report(gts, some_invalid, sens, labels=["a", "b", "(invalid)"],
                                   average="macro")
    # group x: 4 of 10 unanswered (2 a, 2 b): per class TP 3, FN 2, FP 0 -> F1 6/8, FDR 0
    assert rep["fairness/by_group/s=x/f1"] == pytest.approx(0.75)
    assert rep["fairness/by_group/s=x/fdr"] == 0.0
    assert rep["fairness/by_group/s=x/tpr"] == pytest.approx(0.6)
    assert rep["fairness/by_group/s=y/f1"] == 1.0
    assert rep["fairness/f1_gap"] == pytest.approx(0.25)


def test_fairlearn_differences_binary_equal_fairlearn(actg):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    df, y, pred = actg
    d = fairlearn_differences(y, pred, df["race"])
    assert d["demographic_parity_difference"] == demographic_parity_difference(
        y, pred, sensitive_features=df["race"])
    assert d["equalized_odds_difference"] == equalized_odds_difference(
        y, pred, sensitive_features=df["race"])


@pytest.mark.parametrize("kwargs,match", [
    ({"y_pred": [0, 1]}, "y_pred: length"),
    ({"labels": [0, 1]}, "y_true: values \\[2\\]"),
    ({"y_true": [0, 1, np.nan, 1]}, "y_true: contains missing"),
    ({"sensitive": pd.DataFrame({"a": [1, 2]})}, "sensitive: 2 rows"),
    ({"min_group_size": 0}, "min_group_size"),
    ({"average": "micro"}, "average"),
])
def test_bad_input(kwargs, match):
    args = {"y_true": [0, 1, 2, 1], "y_pred": [0, 1, 1, 1],
            "sensitive": pd.DataFrame({"a": ["x", "y", "x", "y"]})}
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        clinical_fairness_report(**args)
