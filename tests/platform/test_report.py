"""platform.report on sweep-shaped MLflow data created directly in a temp sqlite store."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from platform import report as R
from platform.cli import run_main
from test_report_fixtures import GROUPS, make_sweep


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    ids = make_sweep(uri, "sweep-a", scenarios=("urban", "rural"), lambdas=(0.0, 0.3, 0.5), seeds=3)
    # Same store (one MLflow schema migration per module): a sweep lacking two metrics and an
    # experiment without a sweep, for the bad-input cases.
    make_sweep(uri, "thin", scenarios=("urban",), lambdas=(0.0, 0.3), seeds=2,
               drop_metrics=("eval/fairness/eo_score", "eval/fairness/wte_score"))
    make_sweep(uri, "legacy", scenarios=("urban",), lambdas=(0.0, 0.3), seeds=2,
               legacy_names=True)
    import mlflow

    mlflow.MlflowClient(uri).create_experiment("empty")
    return uri, ids, tmp


@pytest.fixture(scope="module")
def built(sweep_store):
    uri, ids, tmp = sweep_store
    out = tmp / "out"
    assert run_main(R.main, ["--experiment", "sweep-a", "--tracking-uri", uri,
                             "--out", str(out)]) == 0
    return out, uri, ids


def test_report_files_tables_and_plots(built):
    out, _, _ = built
    for name in ("report.md", "summary.csv", "comparisons.csv", "curves.csv", "waits.csv",
                 "pareto.png", "training_curves.png", "wait_times.png"):
        assert (out / name).is_file(), name
    for png in ("pareto.png", "training_curves.png", "wait_times.png"):
        img = np.asarray(Image.open(out / png).convert("L"), dtype=float)
        assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 5, png  # not blank
    summary = pd.read_csv(out / "summary.csv")
    # 2 scenarios x 3 λ x (5 required + util/beds + 3 group waits)
    assert len(summary) == 2 * 3 * (5 + 1 + len(GROUPS))
    assert (summary["n"] == 3).all()
    assert ((summary["ci_low"] <= summary["mean"] + 1e-12)
            & (summary["mean"] <= summary["ci_high"] + 1e-12)).all()
    comp = pd.read_csv(out / "comparisons.csv")
    assert len(comp) == 2 * 2 * 5  # scenarios x non-baseline λ x required metrics
    for col in ("p", "p_bonferroni", "p_holm"):
        assert comp[col].between(0, 1).all()
    assert (comp["p_holm"] <= comp["p_bonferroni"] + 1e-12).all()
    assert (comp["p_holm"] >= comp["p"] - 1e-12).all()


def test_report_detects_real_effect_and_says_null_is_not_significant(built):
    out, _, _ = built
    comp = pd.read_csv(out / "comparisons.csv")
    urban_dp = comp[(comp.scenario == "urban") & (comp.key == "eval/fairness/dp_score")
                    & np.isclose(comp["lambda"], 0.5)].iloc[0]
    # DP score 0.8 -> 0.875: unfairness 0.2 -> 0.125 (+37.5% in expectation), large d
    assert urban_dp.verdict == "significantly better"
    s = pd.read_csv(out / "summary.csv")
    cell = s[(s.scenario == "urban") & (s.key == "eval/fairness/dp_score")].set_index("lambda")["mean"]
    assert urban_dp.change_pct == pytest.approx(100 * (cell[0.5] - cell[0.0]) / (1 - cell[0.0]))
    assert 20 < urban_dp.change_pct < 55
    assert urban_dp.change_ci_low <= urban_dp.change_pct <= urban_dp.change_ci_high
    assert urban_dp.cohens_d > 2
    rural = comp[comp.scenario == "rural"]
    assert (rural["verdict"] == "not significant").all()
    md = (out / "report.md").read_text()
    assert "not significant" in md and "Claim check: λ=0.3" in md
    assert "![Training curves per group](training_curves.png)" in md
    assert "not reproduced" in md  # rural shows no effect, so the claim cannot hold everywhere


def test_training_curves_deduplicate_replayed_iterations(built):
    out, _, _ = built
    curves = pd.read_csv(out / "curves.csv")
    per_run = curves.groupby(["scenario", "lambda", "seed", "group"])["iteration"]
    assert (per_run.apply(lambda s: s.is_unique)).all()
    assert sorted(curves["iteration"].unique()) == [1, 2, 3]
    # the replayed step keeps its last logged value
    assert (curves[(curves.group == GROUPS[0]) & (curves.iteration == 3)]["value"] == 99.0).all()
    waits = pd.read_csv(out / "waits.csv")
    assert set(waits["source"]) == {"episodes"}
    assert len(waits) == 2 * 3 * 3 * 6 * len(GROUPS)  # every episode x group


def test_report_logged_to_parent_run(built):
    import mlflow

    _, uri, ids = built
    names = {f.path for f in mlflow.MlflowClient(uri).list_artifacts(ids["parent"], "report")}
    assert {"report/report.md", "report/pareto.png", "report/comparisons.csv"} <= names


def test_unknown_experiment_exits_2_from_cli(sweep_store, tmp_path, run_env, repo_root):
    uri, _, _ = sweep_store
    proc = subprocess.run([sys.executable, "-m", "platform.report", "--experiment", "nope",
                           "--tracking-uri", uri, "--out", str(tmp_path / "o")],
                          cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no experiment named 'nope'" in proc.stderr and "sweep-a" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_runs_lacking_metrics_are_named(sweep_store, tmp_path, capsys):
    uri, _, _ = sweep_store
    code = run_main(R.main, ["--experiment", "thin", "--tracking-uri", uri,
                             "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "eval/fairness/eo_score (missing in 4 of 4 runs)" in err and "eval/fairness/wte_score" in err
    assert "eval/fairness/dp_score" not in err
    assert not (tmp_path / "o").exists()


def test_sweep_logged_under_the_old_score_names_still_reports(sweep_store, tmp_path):
    """Runs from before the rename log ``eval/fairness/dp`` ...: read as ``..._score``."""
    import mlflow

    uri, _, _ = sweep_store
    client = mlflow.MlflowClient(uri)
    res = R.build_report(client, "legacy", tmp_path / "o", log_to_parent=False)
    assert res["trials"] == 4
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert {s.key for s in R.REQUIRED} <= set(summary["key"])
    assert not summary["key"].isin(list(R.LEGACY_KEYS)).any()


def test_baseline_lambda_not_in_sweep(sweep_store, tmp_path, capsys):
    uri, _, _ = sweep_store
    code = run_main(R.main, ["--experiment", "sweep-a", "--tracking-uri", uri,
                             "--baseline-lambda", "0.2", "--out", str(tmp_path / "o")])
    assert code == 2 and "--baseline-lambda: 0.2 is not in the sweep; λ values: 0, 0.3, 0.5" \
        in capsys.readouterr().err


def test_experiment_without_sweep(sweep_store, tmp_path, capsys):
    uri, _, _ = sweep_store
    code = run_main(R.main, ["--experiment", "empty", "--tracking-uri", uri,
                             "--out", str(tmp_path / "o")])
    assert code == 2 and "has no sweep" in capsys.readouterr().err


def test_pareto_mask_hand_case():
    x = np.array([1.0, 2.0, 3.0, 2.5])
    y = np.array([0.1, 0.3, 0.2, 0.1])  # lower is fairer
    # (1, .1) best fairness; (3, .2) best return; (2.5, .1) dominates (1, .1)? x higher, y equal -> yes
    assert R._pareto_mask(x, y, y_higher=False).tolist() == [False, False, True, True]
