"""``platform.train sft``: the supervised warm start teaches the policy the answers, exports it as
a Hugging Face model dir that answers exactly as the run's last evaluation, and an RL run
started from that dir starts where the sft run ended."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

torch = pytest.importorskip("torch")

SMALL = ["--set", "learner.num_learners=1", "--set", "rollout.num_workers=1",
         "--set", "learner.grad_accum=1", "--set", "rollout.num_cpus=0.1",
         "--set", "learner.num_cpus=0.1", "--set", "checkpoint_every=0",
         "--set", "data.eval_split=test", "--set", "eval_bootstrap=0"]


@pytest.fixture(scope="module")
def sft_run(ray_session, tmp_path_factory):
    """50 sft steps on the default synthetic data, evaluated before the first step and after
    the last; returns (uri, run, export dir, argv pieces)."""
    from platform.clinical.train import main

    import mlflow

    from envs.clinical import synth

    tmp = tmp_path_factory.mktemp("sft")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    data = str(synth.default_dataset_path(n_per_source=120))
    argv = SMALL + ["--data", data, "--tracking-uri", uri, "--experiment", "sft-test",
                    "--set", "eval_every=0", "--set", "eval_at_start=true",
                    "--set", "data.prompts_per_step=16", "--set", "learner.lr=0.003"]
    assert main("sft", argv + ["--iterations", "50", "--run-name", "sft",
                               "--set", f"checkpoint_dir={tmp / 'ck'}"]) == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sft-test").experiment_id])
    return uri, run, run.data.tags["equirl.model_dir"], data, tmp


def test_sft_learns_the_answers_and_logs_a_loss(sft_run):
    import mlflow

    uri, run, _, _, _ = sft_run
    client = mlflow.MlflowClient(uri)
    acc = {h.step: h.value for h in client.get_metric_history(run.info.run_id, "eval/accuracy")}
    assert sorted(acc) == [0, 50]
    # the tiny random policy answers at about chance (3 options or 2); 50 supervised steps
    # teach it the image signal (a flipped loss sign or a dropped update fails this)
    assert acc[50] >= 0.7 and acc[50] - acc[0] >= 0.2, acc
    loss = [h.value for h in sorted(client.get_metric_history(run.info.run_id, "learner/loss"),
                                    key=lambda h: h.step)]
    assert len(loss) == 50 and loss[-1] < loss[0] / 3, loss[::5]
    m = run.data.metrics
    assert "reward/mean" not in m and run.data.params["learner.policy_loss"] == "sft"
    assert run.info.status == "FINISHED"


def test_the_export_scores_as_the_run_did_with_platform_evaluate(sft_run):
    """``python -m platform.evaluate clinical`` on the exported dir (from_pretrained, greedy, in
    process) reproduces the run's last evaluation exactly (letter-only decoding carried over
    with the spec file) and writes an MLflow run and a report without patient-level data."""
    import json
    from platform.clinical import models
    from platform.evaluate import main

    import mlflow

    uri, run, export, data, tmp = sft_run
    assert models.is_builtin(export)
    out = tmp / "eval"
    assert main(["clinical", "--model", export, "--data", data, "--split", "test", "--out", str(out),
                 "--tracking-uri", uri, "--bootstrap", "20", "--run-name", "eval-sft"]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = run.data.metrics
    for key in ("eval/accuracy", "fairness/f1_gap", "fairness/pp_gap", "overall/f1"):
        assert rep["metrics"][key] == pytest.approx(m[key], abs=1e-12), key
    assert rep["metrics"]["fairness/f1_gap_ci_low"] <= rep["metrics"]["fairness/f1_gap_ci_high"]
    text = (out / "report.md").read_text() + (out / "report.json").read_text()
    assert "ΔF1" in text and "synth-cxr-0" not in text  # aggregates only: no row ids
    # privacy: groups under --report-min-size (default 10) show their size, not their accuracy
    cells = [line.split(" | ") for line in (out / "report.md").read_text().splitlines()
             if line.startswith("| ") and line.count(" | ") == 2 and "group" not in line]
    sizes = {int(c[1]) for c in cells}
    assert min(sizes) < 10 <= max(sizes), cells  # both kinds are there
    assert all((c[2].rstrip(" |") == "withheld") == (int(c[1]) < 10) for c in cells), cells
    client = mlflow.MlflowClient(uri)
    (ev,) = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    assert ev.info.status == "FINISHED" and ev.data.params["split"] == "test"
    assert ev.data.metrics["eval/accuracy"] == m["eval/accuracy"]


def test_evaluate_bad_input_exits_2_and_writes_nothing(tmp_path, run_env, repo_root):
    import subprocess
    import sys
    from platform.clinical.models import cached_tiny_vlm

    from envs.clinical import synth

    data, tiny = str(synth.default_dataset_path(n_per_source=120)), str(cached_tiny_vlm())
    for extra, word in ((["--model", str(tmp_path / "nope"), "--data", data], "model.path"),
                        (["--model", tiny, "--data", str(tmp_path / "x.parquet")], "x.parquet"),
                        (["--model", tiny, "--data", data, "--attributes", "shoe_size"], "shoe_size"),
                        (["--model", tiny, "--data", data, "--bootstrap", "3"], "--bootstrap")):
        proc = subprocess.run([sys.executable, "-m", "platform.evaluate", "clinical", *extra,
                               "--out", str(tmp_path / "o"), "--tracking-uri",
                               f"sqlite:///{tmp_path / 'm.db'}"], cwd=repo_root, env=run_env(),
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 2 and word in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.db").exists()


def test_rl_starts_from_the_sft_model(sft_run):
    """grpo --model <export>: its step-0 evaluation is the sft run's last one."""
    from platform.clinical.train import main

    import mlflow

    uri, run, export, data, tmp = sft_run
    argv = SMALL + ["--data", data, "--tracking-uri", uri, "--experiment", "sft-test-rl",
                    "--model", export, "--iterations", "1", "--set", "eval_at_start=true",
                    "--set", "data.prompts_per_step=4", "--set", f"checkpoint_dir={tmp / 'rl'}"]
    assert main("grpo", argv) == 0
    client = mlflow.MlflowClient(uri)
    (rl,) = client.search_runs([client.get_experiment_by_name("sft-test-rl").experiment_id])
    start = {h.step: h.value for h in client.get_metric_history(rl.info.run_id, "eval/accuracy")}
    assert start[0] == run.data.metrics["eval/accuracy"]
    assert rl.data.params["model.path"] == export


@pytest.mark.parametrize("algorithm,value", [("sft", "ppo"), ("grpo", "sft")])
def test_the_sft_loss_belongs_to_the_sft_command(algorithm, value, run_env, repo_root):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "platform.train", algorithm, "--set",
                           f"learner.policy_loss={value}"], cwd=repo_root, env=run_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "learner.policy_loss" in proc.stderr and "Traceback" not in proc.stderr
