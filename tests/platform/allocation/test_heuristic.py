"""``python -m platform.train heuristic``: a rule evaluated like a trained policy (same seeds,
same rows and metrics, a FINISHED MLflow run), and bad input refused with exit 2."""

from __future__ import annotations

import subprocess
import sys
from platform.allocation.config import AllocationConfig, HeuristicConfig
from platform.allocation.evaluate import evaluate, evaluate_rule, summarize
from platform.allocation.heuristic import main
from platform.cli import run_main

import pandas as pd
import pytest

from base.config import build

SMALL = ["--set", "eval_episodes=2", "--set", "env_config.max_decisions=60"]


def _runs(uri: str, experiment: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_cli_logs_a_finished_run_like_a_trained_one(repo_root, run_env, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "platform.train", "heuristic", "--policy", "triage", "--scenario",
         "rural", "--tracking-uri", uri, "--experiment", "rules", *SMALL],
        cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = _runs(uri, "rules")
    assert run.info.status == "FINISHED" and run.info.run_name == "heuristic-triage-rural-s0"
    assert run.data.tags["equirl.track"] == "allocation"
    assert run.data.tags["equirl.algorithm"] == "heuristic"
    assert run.data.tags["equirl.policy"] == "triage"
    p = run.data.params
    assert (p["algorithm"], p["policy"], p["scenario"], p["seed"]) == ("heuristic", "triage", "rural", "0")
    assert p["eval_seed_base"] == str(AllocationConfig.eval_seed_base)  # a trained run's seeds
    assert p["env_config.max_decisions"] == "60" and "robust_lambda" not in p
    m = run.data.metrics
    for key in ("eval/return", "eval/fairness/dp_score", "eval/fairness/eo_score",
                "eval/fairness/wte_score", "eval/fairness/individual_score",
                "eval/group/elderly/return_per_capita", "eval/util/icu"):
        assert key in m, key
    path = mlflow.MlflowClient(uri).download_artifacts(run.info.run_id, "eval/episodes.csv",
                                                       str(tmp_path))
    episodes = pd.read_csv(path)
    assert list(episodes["seed"]) == [1_000_000, 1_000_001]
    assert episodes["return"].mean() == pytest.approx(m["eval/return"])
    assert (episodes["length"] == 60).all()


def test_rules_are_evaluated_like_trained_policies(ray_session):
    """Same seeds, same columns: the one evaluation path (platform.allocation.evaluate)."""
    from platform.allocation.loop import algorithm

    common = {"scenario": "rural", "eval_episodes": 2, "env_config": {"max_decisions": 40}}
    trained_cfg = build(AllocationConfig, {**common, "num_env_runners": 0, "hidden_sizes": [8]})
    rule_cfg = build(HeuristicConfig, {**common, "policy": "fcfs"})
    assert rule_cfg.eval_seeds() == trained_cfg.eval_seeds()
    with algorithm(trained_cfg) as algo:
        trained = evaluate(algo, trained_cfg, 2)
    rule = evaluate_rule("fcfs", rule_cfg, 2)
    assert list(rule.columns) == list(trained.columns)
    assert list(rule["seed"]) == list(trained["seed"])
    assert set(summarize(rule)) == set(summarize(trained))
    assert rule.equals(evaluate_rule("fcfs", rule_cfg, 2))  # deterministic for its seeds


def test_random_rule_depends_on_the_seed_deterministic_rules_do_not():
    cfg = build(HeuristicConfig, {"scenario": "rural", "policy": "random", "eval_episodes": 2,
                                  "env_config": {"max_decisions": 40}})
    a, b = evaluate_rule("random", cfg, 2), evaluate_rule("random", cfg.__class__(
        **{**cfg.__dict__, "seed": 1}), 2)
    assert a.equals(evaluate_rule("random", cfg, 2)) and not a["return"].equals(b["return"])
    tri = build(HeuristicConfig, {**cfg.__dict__, "policy": "triage"})
    assert evaluate_rule("triage", tri, 2).equals(
        evaluate_rule("triage", tri.__class__(**{**tri.__dict__, "seed": 1}), 2))


@pytest.mark.parametrize("argv, message", [
    (["--policy", "nurse"], "policy: got 'nurse'; allowed: equity_triage, fcfs, random, triage"),
    (["--scenario", "starved"], ("scenario: got 'starved'; rules read the hospital simulator's "
                                "state; allowed: urban, rural")),
    (["--lambda", "0.3"], "--lambda: a training option; a rule-based policy is not trained"),
    (["--iterations", "5"], "--iterations: a training option"),
    (["--resume"], "--resume: a training option"),
    (["--set", "lr=0.1"], ("lr: a training option of group-robust-ppo/ppo; a rule-based policy "
                          "is not trained; heuristic takes: algorithm, policy, scenario")),
    (["--set", "num_envs_per_env_runner=8"], "num_envs_per_env_runner: a training option"),
    (["--set", "eval_episodes=0"], "eval_episodes: got 0; must be >= 1"),
    (["--set", "colour=red"], "colour: unknown field; allowed: "),
])
def test_bad_input_exit_2_and_no_run(argv, message, mlflow_uri, capsys):
    code = run_main(lambda a: main("heuristic", a),
                    ["--tracking-uri", mlflow_uri, "--experiment", "bad", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert _runs(mlflow_uri, "bad") == []
