"""platform.report on a sweep with λ × robust_mode arms (λ = 0 shared), rule-based baselines
and evaluation-return curves: arms as rows, rules against trained PPO, rules on the Pareto
plot, per-capita outcomes tested, Holm families, and the convergence check."""

from __future__ import annotations

from platform import report as R
from platform.cli import run_main

import numpy as np
import pandas as pd
import pytest
from test_report_fixtures import GROUPS, make_sweep

# urban: triage has the best return (-90 vs PPO's ~-100) and a worse DP (0.7 vs ~0.8);
# fcfs is worse than PPO on both.
RULES = {"triage": (-90.0, 0.7), "fcfs": (-120.0, 0.6)}
ARMS = ["λ=0", "λ=0.3 ggf", "λ=0.3 worst_group", "rule:fcfs", "rule:triage"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-arms")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    make_sweep(uri, "grid", scenarios=("urban", "rural"), lambdas=(0.0, 0.3),
               modes=("worst_group", "ggf"), rules=RULES, seeds=3, iterations=10, curves=True,
               episodes=2)
    make_sweep(uri, "settled", scenarios=("urban",), lambdas=(0.0, 0.3), seeds=3, iterations=10,
               curves=True, episodes=2)
    out = tmp / "out"
    assert run_main(R.main, ["--experiment", "grid", "--tracking-uri", uri, "--out", str(out)]) == 0
    return uri, out


def test_arms_are_rows_rules_included(grid):
    _, out = grid
    summary = pd.read_csv(out / "summary.csv")
    for sc in ("urban", "rural"):
        here = summary[(summary.scenario == sc) & (summary.key == R.RETURN_KEY)]
        assert list(here["arm"]) == ARMS  # trained by (λ, mode), then the rules
    rules = summary[summary["kind"] == R.RULE]
    assert (rules["n"] == 3).all() and (rules["std"] < 1e-12).all()  # same value at every seed
    triage = rules[(rules.scenario == "urban") & (rules.arm == "rule:triage")].set_index("key")
    assert triage.loc[R.RETURN_KEY, "mean"] == -90.0
    assert triage.loc["eval/fairness/dp_score", "mean"] == pytest.approx(0.7)
    per_capita = summary[summary.key.str.endswith("/return_per_capita")]
    assert set(per_capita["metric"]) == {f"per-capita {g}" for g in GROUPS}


def test_comparisons_two_kinds_with_their_own_holm_families(grid):
    _, out = grid
    comp = pd.read_csv(out / "comparisons.csv")
    n_metrics = len(R.REQUIRED) + len(GROUPS)  # + one per-capita outcome per group
    lam = comp[comp["kind"] == "lambda"]
    assert len(lam) == 2 * 2 * n_metrics  # scenarios x (λ=0.3 worst_group, λ=0.3 ggf)
    assert set(lam["arm"]) == {"λ=0.3 worst_group", "λ=0.3 ggf"} and set(lam["reference"]) == {"λ=0"}
    rule = comp[comp["kind"] == "rule"]
    assert len(rule) == 2 * 2 * n_metrics and set(rule["arm"]) == {"λ=0"}
    assert set(rule["reference"]) == {"rule:triage", "rule:fcfs"}
    # one Holm family per kind and metric: 4 tests each (2 scenarios x 2 arms or rules)
    assert (comp.groupby("family").size() == 4).all()
    for _, fam in comp.groupby("family"):
        ps = fam["p"].to_numpy()
        holm = np.maximum.accumulate(np.minimum(1, (4 - np.arange(4)) * np.sort(ps)))
        assert np.allclose(np.sort(fam["p_holm"].to_numpy()), holm)
    # the per-capita effect of λ in urban (+0.3 λ per group) is found, rural's null is not
    urban = lam[(lam.scenario == "urban") & lam.key.str.endswith("/return_per_capita")]
    assert (urban["verdict"] == "significantly better").all()
    rural = lam[(lam.scenario == "rural") & lam.key.str.endswith("/return_per_capita")]
    assert (rural["verdict"] == "not significant").all()


def test_trained_ppo_against_the_best_rule(grid):
    _, out = grid
    comp = pd.read_csv(out / "comparisons.csv")
    urban = comp[(comp.kind == "rule") & (comp.scenario == "urban")]
    vs_triage = urban[urban.reference == "rule:triage"].set_index("key")
    assert vs_triage.loc[R.RETURN_KEY, "verdict"] == "significantly worse"  # -100 vs -90
    assert vs_triage.loc["eval/fairness/dp_score", "verdict"] == "significantly better"  # .8 vs .7
    md = (out / "report.md").read_text()
    assert "## Trained PPO (λ=0) against the rules" in md
    assert "| urban | return | " in md and "| triage | -90.000 |" in md
    assert "- return: trained PPO is significantly better than the best rule in 0 of 2 " \
           "scenarios, significantly worse in 2" in md


def test_rules_are_points_of_the_pareto_plot(grid):
    _, out = grid
    points = pd.read_csv(out / "pareto.csv")
    urban_dp = points[(points.scenario == "urban") & (points.metric == "DP")].set_index("arm")
    assert set(urban_dp.index) == set(ARMS)
    assert urban_dp.loc["rule:triage", "kind"] == R.RULE
    assert urban_dp.loc["rule:triage", "on_front"]  # best return: not dominated
    assert not urban_dp.loc["rule:fcfs", "on_front"]  # worse return and DP than PPO
    assert (out / "pareto.png").stat().st_size > 10_000


def test_claim_check_per_mode(grid):
    _, out = grid
    md = (out / "report.md").read_text()
    assert "### λ=0.3 worst_group" in md and "### λ=0.3 ggf" in md
    assert "- Verdict (λ=0.3 ggf): the claim is **not reproduced**" in md


def test_convergence_flat_urban_rising_rural(grid):
    _, out = grid
    conv = pd.read_csv(out / "convergence.csv")
    assert set(conv["arm"]) == {"λ=0", "λ=0.3 worst_group", "λ=0.3 ggf"}  # trained arms only
    assert (conv["metric"] == "eval_curve/return").all()
    assert (conv["window_from"] == 9).all() and (conv["points"] == 2).all()  # last 20% of 10
    urban, rural = conv[conv.scenario == "urban"], conv[conv.scenario == "rural"]
    assert urban["flat"].all() and (urban["drift"].abs() < 1).all()
    assert not rural["flat"].any() and np.allclose(rural["drift"], 5.0, atol=1)  # 5 per iteration
    assert (conv["seed_noise"] > 0.5).all()  # the seeds sit 1 apart
    assert "## Convergence" in (out / "report.md").read_text()


def test_check_convergence_exit_codes(grid, capsys):
    uri, _ = grid
    assert run_main(R.main, ["--experiment", "grid", "--tracking-uri", uri,
                             "--check-convergence"]) == 1
    printed = capsys.readouterr().out
    assert "| rural | λ=0 | eval_curve/return | 3 | 10 (9-10) |" in printed and "**no**" in printed
    assert run_main(R.main, ["--experiment", "settled", "--tracking-uri", uri,
                             "--check-convergence"]) == 0
    assert "2 of 2 arms are flat within seed noise" in capsys.readouterr().out


def test_convergence_table_known_answer():
    """Hand case: two seeds, 10 iterations; the window is iterations 9-10."""
    curves = pd.DataFrame({
        "scenario": "s", "arm": "λ=0", "lambda": 0.0, "metric": "eval_curve/return",
        "seed": [0] * 10 + [1] * 10, "iteration": list(range(1, 11)) * 2,
        "value": [0.0] * 8 + [1.0, 3.0] + [0.0] * 8 + [5.0, 5.0]})
    row = R.convergence_table(curves).iloc[0]
    assert row["drift"] == pytest.approx((2.0 + 0.0) / 2)  # seed 0 rises by 2, seed 1 by 0
    assert row["seed_noise"] == pytest.approx(np.std([2.0, 5.0], ddof=1))
    assert row["flat"]  # |1.0| <= 2.12
    curves.loc[curves.seed == 1, "value"] = [0.0] * 8 + [2.0, 4.0]
    assert not R.convergence_table(curves).iloc[0]["flat"]  # drift 2 > noise 0.71
    # every seed the same constant curve (a collapsed policy): noise 0, drift round-off: flat
    curves["value"] = -38.943 + np.tile(np.r_[np.zeros(8), 1e-14, -1e-14], 2)
    assert R.convergence_table(curves).iloc[0]["flat"]
    curves.loc[curves.seed == 1, "value"] = [-38.943] * 9 + [-38.0]  # moves: not flat
    curves.loc[curves.seed == 0, "value"] = [-38.943] * 9 + [-38.0]
    assert not R.convergence_table(curves).iloc[0]["flat"]
