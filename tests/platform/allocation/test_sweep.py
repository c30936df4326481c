"""platform.sweep: bad input, an end-to-end mini sweep + report, a failing trial, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from platform import report as R
from platform import sweep as S
from platform.cli import run_main

import pandas as pd
import pytest

# 4 batched hospitals x 50 decisions: one whole episode each per iteration
TINY = ["--set", "train_batch_size=200", "--set", "minibatch_size=100", "--set", "num_epochs=1",
        "--set", "hidden_sizes=[16]", "--set", "env_config.max_decisions=50",
        "--set", "num_envs_per_env_runner=4"]


def _children(uri: str, experiment: str) -> tuple[object, list]:
    import mlflow

    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(R.TAG_ROLE) == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


@pytest.mark.parametrize("args, message", [
    (["--lambdas", ""], "--lambdas: empty list"),
    (["--lambdas", " , "], "--lambdas: empty list"),
    (["--lambdas", "0,1.5,-0.1"], "--lambdas: 1.5, -0.1 outside [0, 1]"),
    (["--lambdas", "0,x"], "is not a comma-separated list of numbers"),
    (["--scenarios", "urban,moon"], "--scenarios: unknown moon; allowed:"),
    (["--seeds", "0"], "--seeds: got 0"),
    (["--set", "robust_lambda=0.2"], "--set robust_lambda: set by the sweep grid"),
    (["--set", "robust_mode=ggf"], "--set robust_mode: set by the sweep grid; use --modes"),
    (["--set", "minibatch_size=0"], "minibatch_size: got 0"),
    (["--modes", "worst_group,median"], "--modes: unknown median; allowed: gap, ggf, worst_group"),
    (["--baselines", "triage,nurse"],
     "--baselines: unknown nurse; allowed: equity_triage, fcfs, random, triage"),
    (["--baselines", ""], "--baselines: empty list"),
    (["--scenarios", "rural", "--iterations-per-scenario", "urban=3"],
     "--iterations-per-scenario: 'urban' is not in --scenarios; allowed: rural"),
    (["--iterations-per-scenario", "rural=0"], "--iterations-per-scenario: 'rural=0' is not "
                                               "SCENARIO=ITERATIONS with ITERATIONS >= 1"),
    (["--iterations-per-scenario", "rural"], "is not SCENARIO=ITERATIONS"),
])
def test_bad_input_exit_2(args, message, capsys, mlflow_uri):
    code = run_main(S.main, ["group-robust-ppo", "--tracking-uri", mlflow_uri, *args])
    assert code == 2 and message in capsys.readouterr().err


def test_unknown_algorithm_and_cli_exit_code(repo_root, run_env, tmp_path):
    assert run_main(S.main, ["fairgrpo"]) == 2
    proc = subprocess.run([sys.executable, "-m", "platform.sweep", "group-robust-ppo",
                           "--lambdas", "", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and "--lambdas: empty list" in proc.stderr
    assert not (tmp_path / "m.db").exists()  # nothing created before validation


def test_resume_without_sweep_is_usage_error(capsys, mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIRL_STORAGE", str(tmp_path / "rr"))
    code = run_main(S.main, ["group-robust-ppo", "--scenarios", "rural", "--lambdas", "0",
                             "--seeds", "1", "--tracking-uri", mlflow_uri, "--name", "nothing",
                             "--resume"])
    assert code == 2 and "--resume: no sweep 'nothing'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mini_sweep_end_to_end_with_report(ray_session, mlflow_uri, tmp_path):
    argv = ["group-robust-ppo", "--scenarios", "rural", "--lambdas", "0,0.3", "--seeds", "2",
            "--iterations", "1", "--tracking-uri", mlflow_uri, "--experiment", "mini",
            "--name", f"mini-{tmp_path.name}", "--set", "eval_episodes=2", *TINY]
    assert run_main(S.main, argv) == 0
    parent, kids = _children(mlflow_uri, "mini")
    assert parent.info.status == "FINISHED" and len(kids) == 4
    assert sorted((k.data.params["robust_lambda"], k.data.params["seed"]) for k in kids) == [
        ("0.0", "0"), ("0.0", "1"), ("0.3", "0"), ("0.3", "1")]
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    eval_seeds = set()
    for k in kids:
        assert k.info.status == "FINISHED"
        assert {"eval/return", "eval/fairness/dp_score", "group_gap", "iteration"} <= set(k.data.metrics)
        assert [m.step for m in client.get_metric_history(k.info.run_id, "iteration")] == [1]
        ep = pd.read_parquet(client.download_artifacts(k.info.run_id, R.EPISODES_ARTIFACT, str(tmp_path)))
        assert len(ep) == 2 and ep["return"].mean() == pytest.approx(k.data.metrics["eval/return"])
        eval_seeds.add(tuple(ep["seed"]))
        base = int(k.data.params["eval_seed_base"])
        assert base >= int(k.data.params["seed"]) + 10_000  # evaluation seeds != training seeds
    assert len(eval_seeds) == 1  # every trial is evaluated on the same fixed seeds
    # the finished sweep's parent run carries its comparison report without another command
    auto = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/comparisons.csv", "report/pareto.png"} <= auto, auto
    assert client.get_run(parent.info.run_id).data.tags["equirl.sweep.report"] == "report/report.md"
    out = tmp_path / "report"
    assert run_main(R.main, ["--experiment", "mini", "--tracking-uri", mlflow_uri,
                             "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    required = summary[summary.key.isin([s.key for s in R.REQUIRED])]
    assert len(required) == 2 * len(R.REQUIRED) and (required["n"] == 2).all()
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp["lambda"]) == {0.3} and set(comp["kind"]) == {"lambda"}
    # the required metrics plus each group's per-capita outcome, one row each
    outcome_keys = {k for k in comp["key"] if k.endswith(R.PER_CAPITA_SUFFIX)}
    assert len(outcome_keys) >= 2 and all(k.startswith("eval/group/") for k in outcome_keys)
    assert sorted(comp["key"]) == sorted([s.key for s in R.REQUIRED] + list(outcome_keys))
    assert {"pareto.png", "training_curves.png", "wait_times.png"} <= {p.name for p in out.iterdir()}
    waits = pd.read_csv(out / "waits.csv")
    assert set(waits["source"]) == {"episodes"} and waits["group"].nunique() >= 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failing_trial_does_not_kill_the_sweep(ray_session, mlflow_uri, tmp_path):
    from platform import tracking

    marker = tmp_path / "attempts"
    marker.mkdir()

    def flaky(config):  # nested: pickled by value for the Tune workers
        from ray import tune

        cell = config["cell"]
        (marker / f"{cell['robust_lambda']}-{cell['seed']}-{time.time_ns()}").touch()
        if cell["seed"] == 1:
            raise RuntimeError("injected trial failure")
        tune.report({S.STEP_KEY: 1, "eval/return": 1.0})

    spec = S.SweepSpec(algorithm="group-robust-ppo", scenarios=["rural"], lambdas=[0.0, 0.3],
                       seeds=[0, 1], base={"iterations": 1, "num_env_runners": 0},
                       name=f"flaky-{tmp_path.name}", experiment="flaky", max_failures=1)
    uri, exp_id = tracking.setup(mlflow_uri, "flaky")
    res = S.run_sweep(spec, uri=uri, exp_id=exp_id, trainable=flaky)
    assert res["trials"] == res["done"] == 4 and res["errors"] == 2 and not res["interrupted"]
    assert all("injected trial failure" in e for e in res["failed"])
    attempts = [p.name.rsplit("-", 1)[0] for p in marker.iterdir()]
    assert sorted(attempts) == sorted(["0.0-0", "0.3-0"] + ["0.0-1", "0.3-1"] * 2)  # one retry each
    parent, kids = _children(uri, "flaky")
    assert parent.info.status == "FINISHED" and parent.data.tags["equirl.sweep.failed_trials"] == "2"
    status = sorted((k.data.params["seed"], k.info.status) for k in kids)
    assert status == [("0", "FINISHED"), ("0", "FINISHED"), ("1", "FAILED"), ("1", "FAILED")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_after_interrupt_no_duplicates(ray_session, mlflow_uri, tmp_path, repo_root,
                                              run_env):
    """Ctrl-C a running sweep, then --resume: same parent, one child per trial, no repeated steps."""
    import mlflow

    name = f"resume-{tmp_path.name}"
    storage = os.environ["EQUIRL_STORAGE"]  # the session's, so the resume below finds it
    argv = ["group-robust-ppo", "--scenarios", "rural", "--lambdas", "0.3", "--seeds", "2",
            "--iterations", "2", "--tracking-uri", mlflow_uri, "--experiment", "resume",
            "--name", name, "--max-concurrent", "1", "--set", "eval_episodes=1",
            "--set", "checkpoint_every=1", *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "platform.sweep", *argv], cwd=repo_root,
                            env=run_env(EQUIRL_STORAGE=storage), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:  # interrupt once the first trial has logged iteration 1
        lines.append(line)
        if "] iter 1" in line:
            break
    else:
        pytest.fail("sweep ended before it could be interrupted:\n" + "".join(lines[-30:]))
    os.killpg(proc.pid, signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
    assert proc.returncode != 0, rest[-2000:]
    parent, kids = _children(mlflow_uri, "resume")
    assert parent.info.status == "KILLED" and all(k.info.status != "RUNNING" for k in kids)
    assert not (len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids))  # interrupted
    assert (Path(storage) / "sweeps" / name / "tuner.pkl").exists()

    assert run_main(S.main, [*argv, "--resume"]) == 0
    parent2, kids = _children(mlflow_uri, "resume")
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    client = mlflow.MlflowClient(mlflow_uri)
    for k in kids:
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "iteration")]
        assert sorted(steps) == [1, 2], steps  # each iteration logged exactly once
        assert "eval/return" in k.data.metrics
        assert len(client.list_artifacts(k.info.run_id, "eval")) == 1


def test_grid_order_completes_cells_first():
    """Seeds vary fastest, scenarios slowest: a partial sweep holds whole cells."""
    from ray.tune.search.variant_generator import generate_variants

    spec = S.SweepSpec(algorithm="group-robust-ppo", scenarios=["urban", "rural"],
                       lambdas=[0.0, 0.3], seeds=[0, 1, 2])
    order = [(v["cell"]["scenario"], v["cell"]["robust_lambda"], v["cell"]["seed"])
             for _, v in generate_variants(S._param_space(spec))]
    assert order == [(sc, lam, s) for sc in spec.scenarios for lam in spec.lambdas
                     for s in spec.seeds]


def test_lambda_zero_is_shared_and_rules_run_beside_the_grid():
    spec = S.SweepSpec(algorithm="group-robust-ppo", scenarios=["urban", "rural"],
                       lambdas=[0.0, 0.1, 0.3], seeds=[0, 1], modes=["worst_group", "ggf"],
                       baselines=["triage", "fcfs"])
    arms = [(a["robust_lambda"], a["robust_mode"]) for a in spec.arms()]
    assert arms == [(0.0, "worst_group"), (0.1, "worst_group"), (0.1, "ggf"),
                    (0.3, "worst_group"), (0.3, "ggf")]  # λ = 0 once: PPO whatever the mode
    cells = spec.cells()
    assert len(cells) == spec.n_trials == 2 * 2 * (5 + 2)
    urban = [c for c in cells if c["scenario"] == "urban"]
    assert urban[:4] == [{"scenario": "urban", "policy": p, "seed": s}
                         for p in ("triage", "fcfs") for s in (0, 1)]  # rules first: cheap
    assert [c["seed"] for c in urban[4:]] == [0, 1] * 5  # whole cells, seed fastest
    assert cells[len(urban)]["scenario"] == "rural"  # scenario slowest


def test_trial_configs_of_rules_and_per_scenario_budgets():
    from platform.allocation.config import AllocationConfig, HeuristicConfig

    spec = S.SweepSpec(algorithm="group-robust-ppo", scenarios=["urban", "rural"],
                       lambdas=[0.0, 0.3], seeds=[3], modes=["ggf"], baselines=["random"],
                       iterations={"urban": 60},
                       base={"iterations": 40, "eval_episodes": 7, "eval_seed_base": 2_000_000,
                             "env_config": {"max_decisions": 90}, "train_batch_size": 4096,
                             "num_env_runners": 0})
    configs = [S.trial_config(spec, c) for c in spec.cells()]
    rules = [c for c in configs if isinstance(c, HeuristicConfig)]
    trained = [c for c in configs if isinstance(c, AllocationConfig)]
    assert len(rules) == 2 and len(trained) == 4
    for rule in rules:  # the trained trials' evaluation, none of their training fields
        assert (rule.policy, rule.seed, rule.eval_episodes) == ("random", 3, 7)
        assert rule.eval_seeds() == trained[0].eval_seeds()
        assert rule.env_config == {"max_decisions": 90}
    assert {(c.scenario, c.iterations) for c in trained} == {("urban", 60), ("rural", 40)}
    assert {(c.robust_lambda, c.robust_mode) for c in trained} == {(0.0, "ggf"), (0.3, "ggf")}


def test_rule_trial_reports_its_evaluation_at_step_zero(monkeypatch):
    from platform.allocation.evaluate import evaluate_rule, summarize

    from ray import tune

    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    base = {"eval_episodes": 2, "env_config": {"max_decisions": 30}, "num_env_runners": 0,
            "train_batch_size": 512}
    S.allocation_trial({"algorithm": "group-robust-ppo", "base": base,
                        "cell": {"scenario": "rural", "policy": "triage", "seed": 0}})
    (report,) = reports
    assert report[S.STEP_KEY] == 0
    expected = evaluate_rule("triage", S.cell_config("group-robust-ppo", base, {
        "scenario": "rural", "policy": "triage", "seed": 0}), 2)
    assert {k: report[k] for k in summarize(expected)} == summarize(expected)
    assert pd.DataFrame(report[S.EPISODES_KEY]).equals(expected)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_with_modes_baselines_and_budgets_then_report(ray_session, mlflow_uri, tmp_path):
    """λ ∈ {0, 0.3} x {worst_group, ggf} (λ = 0 once) + rules triage, fcfs on rural, rural's
    own budget; the report has the rules as rows, comparisons and Pareto points."""
    argv = ["group-robust-ppo", "--scenarios", "rural", "--lambdas", "0,0.3",
            "--modes", "worst_group,ggf", "--baselines", "triage,fcfs", "--seeds", "2",
            "--iterations", "3", "--iterations-per-scenario", "rural=1",
            "--tracking-uri", mlflow_uri, "--experiment", "grid",
            "--name", f"grid-{tmp_path.name}", "--set", "eval_episodes=2", *TINY]
    assert run_main(S.main, argv) == 0
    parent, kids = _children(mlflow_uri, "grid")
    assert parent.info.status == "FINISHED" and len(kids) == 2 * (3 + 2)
    assert parent.data.params["modes"] == "worst_group,ggf"
    assert parent.data.params["baselines"] == "triage,fcfs"
    assert parent.data.params["iterations_per_scenario"] == "rural=1"
    rules = [k for k in kids if "policy" in k.data.params]
    trained = [k for k in kids if "policy" not in k.data.params]
    assert sorted((k.data.params["policy"], k.data.params["seed"]) for k in rules) == [
        ("fcfs", "0"), ("fcfs", "1"), ("triage", "0"), ("triage", "1")]
    assert all(k.data.tags["equirl.algorithm"] == "heuristic" for k in rules)
    assert sorted((k.data.params["robust_lambda"], k.data.params["robust_mode"])
                  for k in trained) == [("0.0", "worst_group")] * 2 + [
        ("0.3", "ggf")] * 2 + [("0.3", "worst_group")] * 2
    assert all(k.data.params["iterations"] == "1" for k in trained)
    assert all(k.data.params["env_vectorize"] == "batched" for k in trained)
    assert all(k.info.status == "FINISHED" for k in kids)
    eval_keys = {k for k in trained[0].data.metrics if k.startswith("eval/")}
    for k in rules:  # the same evaluation metrics as a trained trial
        assert {m for m in k.data.metrics if m.startswith("eval/")} == eval_keys
    out = tmp_path / "report"
    assert run_main(R.main, ["--experiment", "grid", "--tracking-uri", mlflow_uri,
                             "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["arm"]) == {"λ=0", "λ=0.3 worst_group", "λ=0.3 ggf", "rule:fcfs",
                                   "rule:triage"}
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp[comp.kind == "rule"]["reference"]) == {"rule:fcfs", "rule:triage"}
    points = pd.read_csv(out / "pareto.csv")
    assert {"rule:fcfs", "rule:triage"} <= set(points["arm"])
    md = (out / "report.md").read_text()
    assert "## Trained PPO (λ=0) against the rules" in md
