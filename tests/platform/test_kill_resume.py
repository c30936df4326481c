"""A driver killed with SIGKILL mid-run, then ``--resume``: the same MLflow run continues, no
step is logged twice, and the result is the uninterrupted run's (issue 17 item 2).

Clinical track, exactly: ``platform.train grpo`` as a user runs it, killed
(``EQUIRL_FAULT=clinical.checkpoint@2:kill``: SIGKILL after step 2 is logged, before its
checkpoint is written, the worst place) and resumed from the step-1 checkpoint, against the same
command run without a kill. Every step's metrics (times aside) and the exported weights must be
equal to the bit.

Allocation track: ``platform.train group-robust-ppo`` killed after iteration 3 trained, before
it was logged (``allocation.iteration@3:kill``), resumed from the iteration-2 checkpoint. What
holds: the same run continues and ends FINISHED with one row per iteration. What does not: the
result is not the uninterrupted run's, because an RLlib checkpoint holds the module, optimizer
and connector states but not the env runners' simulators (their episodes in progress and random
streams), so the resumed run samples other episodes from iteration 3 on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TINY = ["--iterations", "3", "--set", "learner.num_learners=1", "--set", "rollout.num_workers=1",
        "--set", "learner.grad_accum=1", "--set", "data.prompts_per_step=4",
        "--set", "rollout.group_size=4", "--set", "rollout.max_new_tokens=2",
        "--set", "eval_every=1", "--set", "checkpoint_every=1", "--set", "num_cpus=2",
        "--set", "learner.lr=0.01", "--experiment", "kill"]
CLOCK = ("time/", "throughput/", "weight_sync/seconds")  # wall-clock metrics differ by nature


ALLOCATION = ["group-robust-ppo", "--scenario", "rural", "--iterations", "4", "--lambda", "0.3",
              "--set", "train_batch_size=200", "--set", "minibatch_size=100",
              "--set", "num_epochs=1", "--set", "eval_episodes=1", "--set", "hidden_sizes=[16]",
              "--set", "num_env_runners=0", "--set", "checkpoint_every=2",
              "--set", "env_config.max_decisions=50", "--set", "num_envs_per_env_runner=4",
              "--experiment", "kill"]


def _train(argv, env, cwd, algorithm="grpo"):
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "platform.train", algorithm, *argv], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    tree: set[int] = set()
    try:
        while proc.poll() is None:  # remember the driver's Ray processes, to clean up after a kill
            try:
                tree |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        out = proc.stdout.read()
    finally:
        for pid in tree:  # a SIGKILLed driver cannot stop the Ray it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return proc.returncode, out


def _history(client, run_id):
    """metric -> [(step, value)] of a run, wall-clock metrics aside."""
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((h.step, h.value) for h in client.get_metric_history(run_id, k))
            for k in keys if not k.startswith(CLOCK)}


def test_a_killed_clinical_driver_resumes_to_the_uninterrupted_result(tmp_path, run_env, repo_root):
    import mlflow
    from safetensors.torch import load_file

    base = {**run_env(), "EQUIRL_STORAGE": str(tmp_path / "store")}
    base.pop("EQUIRL_FAULT", None)
    a_uri, b_uri = (f"sqlite:///{tmp_path / n}.db" for n in ("whole", "killed"))
    code, out = _train(TINY + ["--tracking-uri", a_uri, "--run-name", "whole"], base, repo_root)
    assert code == 0, out[-3000:]

    b_args = TINY + ["--tracking-uri", b_uri, "--run-name", "killed"]
    code, out = _train(b_args, {**base, "EQUIRL_FAULT": "clinical.checkpoint@2:kill"}, repo_root)
    assert code == -signal.SIGKILL, out[-3000:]
    client = mlflow.MlflowClient(b_uri)
    exp = client.get_experiment_by_name("kill").experiment_id
    (killed,) = client.search_runs([exp])
    assert killed.info.status == "RUNNING"  # nobody could end it
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "time/step")] == [1, 2]
    code, out = _train(b_args + ["--resume"], base, repo_root)
    assert code == 0, out[-3000:]

    (resumed,) = client.search_runs([exp])  # the same run, continued and ended
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    b = _history(client, resumed.info.run_id)
    a_client = mlflow.MlflowClient(a_uri)
    (whole,) = a_client.search_runs([a_client.get_experiment_by_name("kill").experiment_id])
    a = _history(a_client, whole.info.run_id)
    for key, rows in b.items():  # one row per step: step 2 was replayed, not logged again
        assert len({s for s, _ in rows}) == len(rows), (key, rows)
    assert sorted(h.step for h in client.get_metric_history(resumed.info.run_id, "time/step")) \
        == [1, 2, 3]
    assert set(a) == set(b) and len(a) > 20
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not diff, diff  # every step's reward, loss, evaluation ... to the bit
    wa = load_file(os.path.join(whole.data.tags["equirl.model_dir"], "model.safetensors"))
    wb = load_file(os.path.join(resumed.data.tags["equirl.model_dir"], "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_a_killed_allocation_driver_resumes_the_same_run(tmp_path, run_env, repo_root):
    import mlflow

    env = {**run_env(), "EQUIRL_STORAGE": str(tmp_path / "store")}
    env.pop("EQUIRL_FAULT", None)
    uri = f"sqlite:///{tmp_path / 'alloc.db'}"
    argv = ALLOCATION[1:] + ["--tracking-uri", uri, "--run-name", "killed"]
    code, out = _train(argv, {**env, "EQUIRL_FAULT": "allocation.iteration@3:kill"}, repo_root,
                       ALLOCATION[0])
    assert code == -signal.SIGKILL, out[-3000:]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("kill").experiment_id
    (killed,) = client.search_runs([exp])
    rid = killed.info.run_id
    assert killed.info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(rid, "training_iteration")] == [1, 2]
    before = {k: sorted((h.step, h.value) for h in client.get_metric_history(rid, k))
              for k in ("return_mean", "env_steps_total")}
    code, out = _train(argv + ["--resume"], env, repo_root, ALLOCATION[0])
    assert code == 0, out[-3000:]
    # restored at iteration 2: it trains 3 and 4 only (a fresh start would print 1 and 2)
    assert "iter    3/4" in out and "iter    1/4" not in out and "iter    2/4" not in out, out
    (resumed,) = client.search_runs([exp])
    assert resumed.info.run_id == rid and resumed.info.status == "FINISHED"
    steps = sorted(h.step for h in client.get_metric_history(rid, "training_iteration"))
    assert steps == [1, 2, 3, 4]  # iteration 3 trained again after the restore, logged once
    for key, rows in before.items():  # the iterations logged before the kill are untouched
        after = sorted((h.step, h.value) for h in client.get_metric_history(rid, key))
        assert after[:2] == rows and len({s for s, _ in after}) == len(after), key
    # the restore continued the counters: 4 iterations x 200 env steps in all, not 2 x 200 again
    total = {h.step: h.value for h in client.get_metric_history(rid, "env_steps_total")}
    assert total[4] == 4 * total[1], total
    assert "eval/return" in resumed.data.metrics
