"""A run that fails after its MLflow run started ends FAILED with the error recorded, exits
non-zero and leaves nothing RUNNING: each CLI as a user runs it, with a fault injected mid-run
(``platform.faults``, ``EQUIRL_FAULT=<point>@<n>``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLINICAL_TINY = ["--set", "learner.num_learners=1", "--set", "rollout.num_workers=1",
                 "--set", "learner.grad_accum=1", "--set", "data.prompts_per_step=2",
                 "--set", "rollout.group_size=2", "--set", "eval_every=0",
                 "--set", "checkpoint_every=1", "--set", "num_cpus=2"]
ALLOCATION_TINY = ["--set", "train_batch_size=200", "--set", "minibatch_size=100",
                   "--set", "num_epochs=1", "--set", "eval_episodes=1", "--set", "hidden_sizes=[16]",
                   "--set", "num_env_runners=0"]

CASES = {
    "fairgrpo: the reward stage fails at step 2": (
        ["fairgrpo", "--iterations", "3", *CLINICAL_TINY], "clinical.reward@2", "reward/mean", 1),
    "sft: the update fails at step 2": (
        ["sft", "--iterations", "3", *CLINICAL_TINY], "clinical.update@2", "learner/loss", 1),
    "group-robust-ppo: iteration 2 fails": (
        ["group-robust-ppo", "--iterations", "3", *ALLOCATION_TINY], "allocation.iteration@2",
        None, None),
    "fairgrad-classifier: epoch 3 fails": (
        ["fairgrad-classifier", "--dataset", "kidney", "--epochs", "4"], "tabular.epoch@3", None, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_crash_mid_run_ends_failed_with_the_error(case, tmp_path, run_env, repo_root):
    import mlflow

    argv, fault, logged_key, logged_steps = CASES[case]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**run_env(), "EQUIRL_FAULT": fault, "EQUIRL_STORAGE": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, "-m", "platform.train", *argv, "--tracking-uri", uri,
                           "--experiment", "crash"], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=540, check=False)
    assert proc.returncode not in (0, 2), proc.stderr[-3000:]  # a crash, not bad input
    assert "InjectedFault" in proc.stderr
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("crash").experiment_id])
    assert len(runs) == 1, [r.info.status for r in runs]
    (run,) = runs
    assert run.info.status == "FAILED"  # not RUNNING
    assert run.data.tags["equirl.error"].startswith("InjectedFault: EQUIRL_FAULT=" + fault)
    # every training CLI logs its resolved config first (what --config reproduces the run from)
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    if logged_key:  # the run had really started: the steps before the fault are logged
        steps = [m.step for m in client.get_metric_history(run.info.run_id, logged_key)]
        assert len(steps) == logged_steps, steps


def test_a_stuck_rollout_worker_ends_the_run_failed_not_hung(tmp_path, run_env, repo_root):
    """Issue 17 item 4, as a user runs it: the rollout worker stops itself (SIGSTOP) in its 2nd
    generate (step 2). After rollout.timeout_s it is killed and restarted, and step 2 completes
    on the replacement; the replacement stops in its own 2nd generate (step 3; the fault counts
    per process), Ray's one restart (rollout.max_restarts=1) is used up, and the run ends FAILED
    naming the worker, instead of hanging."""
    import time

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**run_env(), "EQUIRL_FAULT": "rollout.generate@2:stop",
           "EQUIRL_STORAGE": str(tmp_path / "store")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "platform.train", "grpo", "--iterations", "3",
                           *CLINICAL_TINY, "--set", "rollout.timeout_s=15",
                           "--set", "rollout.max_restarts=1", "--tracking-uri", uri,
                           "--experiment", "stuck"], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    took = time.perf_counter() - start
    assert proc.returncode not in (0, 2), proc.stderr[-3000:]
    assert "rollout-worker-0: no answer to generate within 15 s" in proc.stderr  # replaced once
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("stuck").experiment_id])
    assert run.info.status == "FAILED"
    error = run.data.tags["equirl.error"]
    assert error.startswith("RolloutWorkerLost: rollout-worker-0: hung in generate"), error
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == [1, 2]
    assert took < 300, took


SWEEP_CASES = {
    # a trial fails (in its Tune actor): its child run FAILED with the error, the others and
    # the parent finish, the exit code says a trial failed
    "a trial fails at iteration 2": ("allocation.iteration@2", 1, "FINISHED", "FAILED"),
    # the driver fails after the parent run started: the parent FAILED with the error
    "the sweep driver fails": ("sweep.fit@1", 1, "FAILED", None),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_a_crash_in_a_sweep_ends_failed_with_the_error(case, tmp_path, run_env, repo_root):
    import mlflow

    fault, code, parent_status, child_status = SWEEP_CASES[case]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**run_env(), "EQUIRL_FAULT": fault, "EQUIRL_STORAGE": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, "-m", "platform.sweep", "group-robust-ppo",
                           "--scenarios", "rural", "--lambdas", "0", "--seeds", "1",
                           "--iterations", "3", "--max-failures", "0", "--no-report",
                           *ALLOCATION_TINY, "--tracking-uri", uri, "--experiment", "crash-sweep"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=540,
                          check=False)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "InjectedFault" in proc.stderr
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("crash-sweep").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if r.data.tags.get("equirl.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("equirl.sweep.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == parent_status
    if child_status is None:  # nothing ran
        assert parents[0].data.tags["equirl.error"].startswith(f"InjectedFault: EQUIRL_FAULT={fault}")
        assert not children
    else:
        (child,) = children
        assert child.info.status == child_status
        assert "InjectedFault: EQUIRL_FAULT=" + fault in child.data.tags["equirl.error"]
        assert parents[0].data.tags["equirl.sweep.failed_trials"] == "1"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "env_steps_total")]
        assert steps == [1], steps  # iteration 1 was logged before the fault


def test_a_learner_that_dies_ends_the_run_failed(tmp_path, run_env, repo_root):
    """Issue 17 item 1, "a learner that dies": learner rank 1 of 2 (ZeRO-2, gloo) is SIGKILLed
    in step 2's update. The driver sees the actor die (Ray reports it at once), names the rank,
    and the run ends FAILED with the error, not RUNNING and not hung."""
    import time

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**run_env(), "EQUIRL_FAULT": "learner1.update@2:kill",
           "EQUIRL_STORAGE": str(tmp_path / "store")}
    tiny = [a if a != "learner.num_learners=1" else "learner.num_learners=2" for a in CLINICAL_TINY]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "platform.train", "grpo", "--iterations", "3",
                           *tiny, "--set", "learner.timeout_s=20", "--tracking-uri", uri,
                           "--experiment", "dead-learner"], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    took = time.perf_counter() - start
    assert proc.returncode not in (0, 2), proc.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("dead-learner").experiment_id])
    assert run.info.status == "FAILED", run.info.status
    error = run.data.tags["equirl.error"]
    assert error.startswith("LearnerLost: learner rank [1] died"), error  # names the rank
    assert [m.step for m in client.get_metric_history(run.info.run_id, "learner/loss")] == [1]
    assert took < 300, took
