"""``python -m platform.fairness`` on real cohorts: numbers equal fairlearn's, bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from platform.cli import run_main
from platform.fairness import evaluate, format_text, main

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

TOL = 1e-9


def _predictions(name: str) -> pd.DataFrame:
    """Cohort + a logistic regression's out-of-fold predictions and scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from envs.cohorts import COHORTS, load_cohort

    spec = COHORTS[name]
    df = load_cohort(name)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    proba = cross_val_predict(model, df[spec["features"]], df[spec["label"]], cv=3,
                              method="predict_proba")[:, 1]
    out = df[[spec["label"]] + spec["sensitive"] + ["age_band"]].copy()
    out["score"] = proba
    out["pred"] = (proba >= 0.5).astype(int)
    return out


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fairness_cli")
    actg = _predictions("actg175")
    support = _predictions("support2")
    actg.to_csv(d / "actg175.csv", index=False)
    support.to_parquet(d / "support2.parquet")
    return {"actg175": (d / "actg175.csv", actg, "cens", ["race", "gender"]),
            "support2": (d / "support2.parquet", support, "death", ["race", "sex"])}


def _fairlearn_reference(df, label, sensitive):
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equal_opportunity_difference,
        equalized_odds_difference,
    )

    y, p = df[label], df["pred"]
    sf = df[sensitive]
    mf = MetricFrame(metrics={"f1": f1_score, "tpr": recall_score, "ppv": precision_score},
                     y_true=y, y_pred=p, sensitive_features=sf)
    return {
        "demographic_parity_difference": demographic_parity_difference(y, p, sensitive_features=sf),
        "equalized_odds_difference": equalized_odds_difference(y, p, sensitive_features=sf),
        "equal_opportunity_difference": equal_opportunity_difference(y, p, sensitive_features=sf),
        "predictive_parity_difference": mf.difference()["ppv"],
        "f1_gap": mf.difference()["f1"],
        "f1_std": float(np.std(mf.by_group["f1"].to_numpy(), ddof=1)),
        "f1": f1_score(y, p),
        "by_group": mf.by_group,
    }


@pytest.mark.parametrize("name", ["actg175", "support2"])
def test_numbers_equal_fairlearn_on_real_cohorts(cohort_files, name):
    _, df, label, sensitive = cohort_files[name]
    res = evaluate(df, label, "pred", sensitive, score="score")
    ref = _fairlearn_reference(df, label, sensitive)
    assert res["too_small"] == []  # every race x sex group has >= 10 patients here
    for key in ("demographic_parity_difference", "equalized_odds_difference",
                "equal_opportunity_difference", "predictive_parity_difference", "f1_gap",
                "f1_std", "f1"):
        assert abs(res[key] - ref[key]) <= TOL, (key, res[key], ref[key])
    by = ref["by_group"]  # the authors' ES-F1: mean group F1 / (1 + std)
    assert res["equity_scaled_f1"] == pytest.approx(by["f1"].mean() / (1 + ref["f1_std"]), abs=TOL)
    one = {c: evaluate(df, label, "pred", [c]) for c in sensitive}  # each attribute on its own
    for key in ("predictive_parity_difference", "f1_gap", "f1_std", "equity_scaled_f1"):
        mean = np.mean([one[c][key] for c in sensitive])
        if key == "equity_scaled_f1":  # from the averaged mean and std, not averaged itself
            f1m = np.mean([np.mean([g["f1"] for g in one[c]["by_group"].values()]) for c in sensitive])
            mean = f1m / (1 + np.mean([one[c]["f1_std"] for c in sensitive]))
        assert res["per_attribute"][key] == pytest.approx(mean, abs=TOL), key
    assert res["groups"] == len(by) == df.groupby(sensitive).ngroups
    for idx, row in by.iterrows():
        g = res["by_group"]["&".join(idx)]
        assert abs(g["f1"] - row["f1"]) <= TOL
        assert abs(g["tpr"] - row["tpr"]) <= TOL
        assert abs(g["fdr"] - (1 - row["ppv"])) <= TOL
    assert 0.5 < res["auroc"] < 1.0


def test_subprocess_json_matches_in_process(cohort_files, run_env, repo_root):
    path, _, label, sensitive = cohort_files["actg175"]
    proc = subprocess.run(
        [sys.executable, "-m", "platform.fairness", "--data", str(path), "--label", label,
         "--pred", "pred", "--sensitive", ",".join(sensitive), "--json"],
        check=False, cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ref = evaluate(pd.read_csv(path), label, "pred", sensitive)
    for key in ("demographic_parity_difference", "equalized_odds_difference",
                "equal_opportunity_difference", "predictive_parity_difference", "f1_std",
                "f1_gap", "equity_scaled_f1", "by_group"):
        assert key in out
    assert out["equalized_odds_difference"] == pytest.approx(ref["equalized_odds_difference"],
                                                             abs=TOL)
    assert set(out["by_group"]) == {"non-white&female", "non-white&male", "white&female",
                                    "white&male"}


@pytest.mark.parametrize("case", ["missing_column", "nan_label", "one_group"])
def test_bad_input_exits_2(cohort_files, tmp_path, run_env, repo_root, capsys, case):
    _, df, label, _ = cohort_files["actg175"]
    data = df.copy()
    sensitive = "race,gender"
    if case == "missing_column":
        sensitive = "race,ethnicity"
    elif case == "nan_label":
        data[label] = data[label].astype(float)
        data.loc[3, label] = np.nan
    else:
        data["site"] = "A"
        sensitive = "site"
    path = tmp_path / "data.csv"
    data.to_csv(path, index=False)
    argv = ["--data", str(path), "--label", label, "--pred", "pred", "--sensitive", sensitive]
    expect = {"missing_column": "no column 'ethnicity'", "nan_label": "1 missing values",
              "one_group": "only one group"}[case]
    if case == "missing_column":  # the real entry point, once
        proc = subprocess.run([sys.executable, "-m", "platform.fairness", *argv], check=False,
                              cwd=repo_root, env=run_env(), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2
        assert expect in proc.stderr and proc.stdout == ""
    else:
        assert run_main(main, argv) == 2
        out = capsys.readouterr()
        assert expect in out.err and out.out == ""


@pytest.mark.parametrize("argv,expect", [
    (["--data", "nowhere.csv"], "no such file"),
    (["--pred", "score_missing"], "--pred: no column"),
    (["--min-group-size", "0"], "--min-group-size"),
    (["--pos-label", "7"], "--pos-label"),
    (["--labels", "0"], "not in labels"),
])
def test_bad_input_in_process(cohort_files, capsys, argv, expect):
    path, _, label, sensitive = cohort_files["actg175"]
    base = {"--data": str(path), "--label": label, "--pred": "pred",
            "--sensitive": ",".join(sensitive)}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = [x for kv in base.items() for x in kv]
    assert run_main(main, args) == 2
    assert expect in capsys.readouterr().err


def test_ci_too_small_and_text(cohort_files, capsys):
    path, df, label, _ = cohort_files["support2"]
    res = evaluate(df, label, "pred", ["race", "sex", "age_band"], ci=True, n_boot=40,
                   min_group_size=30)
    small = [g for g, row in res["by_group"].items() if row.get("too_small")]
    assert small and all(res["by_group"][g]["n"] < 30 for g in small)
    assert all(f"race&sex&age_band={g} " in " ".join(res["too_small"]) for g in small)
    for key in ("demographic_parity_difference", "equalized_odds_difference", "f1_gap", "f1"):
        lo, hi = res["ci"][key]
        assert lo <= hi
    lo, hi = res["ci"]["f1"]
    assert lo <= res["f1"] <= hi
    text = format_text(res)
    assert "too small" in text and "equalized_odds_difference" in text
    assert run_main(main, ["--data", str(path), "--label", label, "--pred", "pred",
                           "--sensitive", "race,sex"]) == 0
    assert "white&male" in capsys.readouterr().out


def test_fast_bootstrap_path_equals_fairlearn(cohort_files):
    from fairness.scores import differences_from_codes

    _, df, label, sensitive = cohort_files["support2"]
    ref = _fairlearn_reference(df, label, sensitive)
    codes = pd.factorize(df[sensitive[0]] + "&" + df[sensitive[1]])[0]
    fast = differences_from_codes(df[label].to_numpy(), df["pred"].to_numpy(), codes,
                                  int(codes.max()) + 1, 2, "binary", 1)
    for k, v in fast.items():
        assert abs(v - ref[k]) <= TOL


def test_multiclass_labels(cohort_files):
    _, df, _, _ = cohort_files["actg175"]
    rng = np.random.default_rng(0)
    data = df.copy()
    data["stage"] = rng.choice(["a", "b", "c"], len(df))
    data["stage_hat"] = np.where(rng.random(len(df)) < 0.6, data["stage"],
                                 rng.choice(["a", "b", "c"], len(df)))
    res = evaluate(data, "stage", "stage_hat", ["race"])
    assert res["average"] == "macro" and res["classes"] == ["a", "b", "c"]
    for g in ("white", "non-white"):
        m = data["race"] == g
        assert res["by_group"][g]["f1"] == pytest.approx(
            f1_score(data.loc[m, "stage"], data.loc[m, "stage_hat"], average="macro"), abs=TOL)
        assert res["by_group"][g]["tpr"] == pytest.approx(
            recall_score(data.loc[m, "stage"], data.loc[m, "stage_hat"], average="macro"),
            abs=TOL)
    assert 0 <= res["demographic_parity_difference"] <= 1
