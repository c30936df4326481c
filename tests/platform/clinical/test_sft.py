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


def test_the_export_answers_as_the_run_did(sft_run):
    """from_pretrained on the exported dir; its greedy answers on the held-out rows score the
    run's last evaluation exactly (letter-only decoding carried over with the spec file)."""
    from platform.clinical import models
    from platform.clinical.generation import GenerationRequest, WorkerImpl

    from envs.clinical import dataset
    from envs.clinical.prompts import build_messages
    from envs.clinical.rewards import parse_choice
    from platform.clinical.driver import row_image

    uri, run, export, data, _ = sft_run
    assert models.is_builtin(export)
    test = dataset.load_dataset(data, "test")
    worker = WorkerImpl("hf", {"model_path": export, "answer_letters": "ABC"})
    rows = [test.iloc[i].to_dict() for i in range(len(test))]
    res = worker.generate(GenerationRequest([build_messages(r) for r in rows],
                                            [row_image(r) for r in rows], n=1, temperature=0.0,
                                            max_new_tokens=4, seed=0))
    hits = [parse_choice(t[0], [str(o) for o in r["options"]]) == list(r["options"]).index(r["answer"])
            for r, t in zip(rows, res.texts)]
    assert sum(hits) / len(hits) == pytest.approx(run.data.metrics["eval/accuracy"], abs=1e-12)


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
