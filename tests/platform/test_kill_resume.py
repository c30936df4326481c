"""A driver killed with SIGKILL mid-run, then ``--resume``: the same MLflow run continues, no
step is logged twice, and the result is the uninterrupted run's (issue 17 item 2).

Clinical track, exactly: ``platform.train grpo`` as a user runs it, killed
(``EQUIRL_FAULT=clinical.checkpoint@2:kill``: SIGKILL after step 2 is logged, before its
checkpoint is written, the worst place) and resumed from the step-1 checkpoint, against the same
command run without a kill. Every step's metrics (times aside) and the exported weights must be
equal to the bit.
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


def _train(argv, env, cwd, timeout=420):
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "platform.train", "grpo", *argv], cwd=cwd,
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
