"""``python -m platform.evaluate allocation``: a trained run's policy or a rule on a scenario.

The checks that matter: scoring a run's checkpoint on the run's evaluation seeds reproduces the
run's own evaluation exactly (same greedy module, same episodes), a rule scores as
``platform.train heuristic`` does, the outputs (MLflow run, per-group table, summary, report)
hold aggregates only, and bad input exits 2 before anything is written.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = ["--scenario", "rural", "--iterations", "2", "--lambda", "0.3",
        "--set", "train_batch_size=200", "--set", "minibatch_size=100", "--set", "num_epochs=1",
        "--set", "eval_episodes=2", "--set", "hidden_sizes=[16]", "--set", "num_env_runners=0",
        "--set", "env_config.max_decisions=50", "--set", "num_envs_per_env_runner=4",
        "--set", "eval_every=1"]


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    """A 2-iteration group-robust PPO run on the rural hospital (evaluated on 2 episodes)."""
    from platform.allocation.train import main

    import mlflow

    tmp = tmp_path_factory.mktemp("alloc-eval")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main("group-robust-ppo", TINY + ["--tracking-uri", uri, "--experiment", "train",
                                            "--set", f"checkpoint_dir={tmp / 'ck'}"]) == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    return uri, run, tmp


def test_a_training_run_logs_per_group_tables_a_figure_and_a_summary(trained):
    """At each greedy evaluation (eval_every=1: iterations 1 and 2) a per-group table; at the
    end the figure and the summary; the last table holds the run's final evaluation."""
    from pathlib import Path

    import mlflow
    import pandas as pd

    uri, run, _ = trained
    client = mlflow.MlflowClient(uri)
    rid = run.info.run_id
    tables = sorted(a.path for a in client.list_artifacts(rid, "eval/by_group"))
    assert tables == ["eval/by_group/step-000001.csv", "eval/by_group/step-000002.csv"]
    assert {"eval/by_group.png", "eval/episodes.csv"} <= {a.path for a in client.list_artifacts(rid, "eval")}
    last = pd.read_csv(client.download_artifacts(rid, tables[-1])).set_index("group")
    for g in ("pediatric", "adult", "elderly"):
        assert last.loc[g, "return_per_capita"] == pytest.approx(
            run.data.metrics[f"eval/group/{g}/return_per_capita"])
        assert last.loc[g, "mean_wait"] == pytest.approx(run.data.metrics[f"eval/group/{g}/mean_wait"])
    summary = Path(client.download_artifacts(rid, "summary.md")).read_text()
    assert "per-capita gap" in summary and "| elderly |" in summary


def test_a_run_scores_exactly_as_its_own_evaluation(trained):
    from platform.evaluate import main

    import mlflow

    uri, run, tmp = trained
    out = tmp / "eval-run"
    assert main(["allocation", "--run", run.info.run_id, "--episodes", "2", "--out", str(out),
                 "--tracking-uri", uri]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = run.data.metrics
    for key in ("eval/return", "eval/fairness/dp_score", "eval/group/elderly/return_per_capita"):
        assert rep["metrics"][key] == m[key], key  # same module, seeds and episodes: exact
    client = mlflow.MlflowClient(uri)
    (ev,) = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    assert ev.info.status == "FINISHED" and ev.data.tags["equirl.command"] == "evaluate"
    assert ev.data.metrics["eval/return"] == m["eval/return"]
    names = {a.path for a in client.list_artifacts(ev.info.run_id)} | {
        a.path for a in client.list_artifacts(ev.info.run_id, "eval")} | {
        a.path for a in client.list_artifacts(ev.info.run_id, "eval/by_group")}
    assert {"summary.md", "report.md", "eval/by_group.png", "eval/by_group/step-000000.csv"} <= names
    groups = {g["group"]: g for g in rep["groups"]}
    assert set(groups) == {"pediatric", "adult", "elderly"}
    # the table's per-capita return is the mean over the episodes of the run's metric
    assert groups["elderly"]["return_per_capita"] == pytest.approx(
        m["eval/group/elderly/return_per_capita"])
    lo, hi = (groups["elderly"][f"return_per_capita_ci_{s}"] for s in ("low", "high"))
    assert lo <= groups["elderly"]["return_per_capita"] <= hi
    assert "per-capita gap" in (out / "report.md").read_text()
    # the same policy from its checkpoint folder, on other seeds: other episodes
    out2 = tmp / "eval-ck"
    assert main(["allocation", "--checkpoint", run.data.tags["equirl.checkpoint"], "--scenario",
                 "rural", "--episodes", "2", "--seed-base", "2000000", "--out", str(out2),
                 "--tracking-uri", uri]) == 0
    assert json.loads((out2 / "report.json").read_text())["metrics"]["eval/return"] != m["eval/return"]


def test_a_rule_scores_as_the_heuristic_command(trained):
    from platform.allocation.config import HeuristicConfig
    from platform.allocation.evaluate import evaluate_rule, summarize
    from platform.evaluate import main

    from base.config import build

    uri, _, tmp = trained
    out = tmp / "eval-rule"
    assert main(["allocation", "--policy", "triage", "--scenario", "rural", "--episodes", "3",
                 "--out", str(out), "--tracking-uri", uri, "--run-name", "triage"]) == 0
    rep = json.loads((out / "report.json").read_text())
    cfg = build(HeuristicConfig, {"policy": "triage", "scenario": "rural", "eval_episodes": 3})
    want = summarize(evaluate_rule("triage", cfg, 3))
    assert rep["metrics"] == pytest.approx(want)
    # privacy: a minimum above every group's patient count withholds every rate
    assert main(["allocation", "--policy", "triage", "--scenario", "rural", "--episodes", "1",
                 "--report-min-size", "100000", "--out", str(tmp / "w"), "--tracking-uri", uri]) == 0
    rows = json.loads((tmp / "w" / "report.json").read_text())["groups"]
    assert all(r["withheld"] and r["return_per_capita"] is None and r["patients"] > 0 for r in rows)


@pytest.mark.parametrize("extra,word", [
    ([], "one of the arguments --run --checkpoint --policy is required"),
    (["--policy", "triage", "--run", "abc"], "not allowed with argument"),
    (["--policy", "triage"], "--scenario"),
    (["--policy", "nope", "--scenario", "rural"], "allowed: equity_triage, fcfs, random, triage"),
    (["--policy", "triage", "--scenario", "mars"], "scenario"),
    (["--policy", "triage", "--scenario", "rural", "--episodes", "0"], "--episodes"),
    (["--checkpoint", "/nonexistent", "--scenario", "rural"], "holds no RLModule"),
    (["--run", "0123456789abcdef"], "--run: no run"),
])
def test_bad_input_exits_2_and_writes_nothing(extra, word, tmp_path, run_env, repo_root):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "platform.evaluate", "allocation", *extra,
                           "--out", str(tmp_path / "o"), "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], cwd=repo_root, env=run_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and word in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_the_run_exports_a_servable_greedy_policy(trained):
    """The run's export (tag equirl.model_dir) and platform.export's: a TorchScript policy that,
    served without RLlib, replays the run's evaluation exactly."""
    from pathlib import Path
    from platform.allocation.config import AllocationConfig
    from platform.allocation.evaluate import evaluate_policy, summarize
    from platform.export import main as export_main

    import torch
    import yaml

    from base.config import build
    from base.errors import UsageError

    uri, run, tmp = trained
    exported = Path(run.data.tags["equirl.model_dir"])
    meta = json.loads((exported / "equirl_policy.json").read_text())
    assert meta["scenario"] == "rural" and meta["iteration"] == 2 and meta["n_actions"] >= 2
    import mlflow

    fields = yaml.safe_load(Path(mlflow.MlflowClient(uri).download_artifacts(
        run.info.run_id, "config.yaml")).read_text())
    cfg = build(AllocationConfig, fields)
    for folder in (exported, tmp / "exported"):
        if folder != exported:
            assert export_main(["--run", run.info.run_id, "--out", str(folder),
                                "--tracking-uri", uri]) == 0
        policy = torch.jit.load(str(folder / "policy.pt"))

        def act(obs, env, policy=policy):
            return int(policy(torch.as_tensor(obs[None], dtype=torch.float32))[0])

        got = summarize(evaluate_policy(lambda seed: act, cfg, cfg.eval_episodes))
        assert got["eval/return"] == run.data.metrics["eval/return"]
        assert got["eval/fairness/dp_score"] == run.data.metrics["eval/fairness/dp_score"]
    with pytest.raises(UsageError, match="--step: allocation runs keep only their latest"):
        export_main(["--run", run.info.run_id, "--out", str(tmp / "x"), "--step", "1",
                     "--tracking-uri", uri])
