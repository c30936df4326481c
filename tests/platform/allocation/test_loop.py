"""The one allocation loop (platform.allocation.loop): its steps, and that both callers,
``platform.train`` (MLflow sink) and the sweep's Tune trainable (``TuneSink``), go through it
— same metric keys and, for the same config and seed, the same values — including the wait
for a restarted env runner after an iteration that sampled nothing.
"""

from __future__ import annotations

import os
import signal
import time
from platform import sweep as S
from platform.allocation import loop, rllib

import pytest
from toy_allocation import TOY, register_toy, toy_config

# deterministic for a seed (time-based metrics like env_steps_per_s are not)
SAME_VALUES = ("return_mean", "group_gap", "loss/total", "group/young/return_per_capita",
               "robust/weight/young",
               "fairness/dp_score", "eval/return", "eval/fairness/dp_score")


@pytest.fixture(scope="module")
def toy(ray_session):
    return register_toy()


class RecordingSink:
    """A sink that keeps every Step (iteration, flags, metric keys)."""

    def __init__(self, last_logged: int = 0):
        self._last, self.steps = last_logged, []

    def last_logged(self) -> int:
        return self._last

    def restore(self, algo) -> None:
        pass

    def emit(self, step: loop.Step, algo) -> None:
        self.steps.append(step)


def test_iterate_marks_replayed_checkpoint_and_final_steps(toy):
    cfg = toy_config(iterations=3, checkpoint_every=2, eval_episodes=2)
    sink = RecordingSink(last_logged=1)  # as if iteration 1 was logged before a hard kill
    assert loop.train(cfg, sink) == 3
    flags = [(s.iteration, s.replayed, s.checkpoint, s.final) for s in sink.steps]
    assert flags == [(1, True, False, False), (2, False, True, False), (3, False, True, True)]
    assert [s.evaluation is not None for s in sink.steps] == [False, False, True]
    assert len(sink.steps[-1].evaluation) == 2
    assert all(s.metrics["training_iteration"] == s.iteration for s in sink.steps)


@pytest.mark.timeout(300)
def test_train_cli_and_sweep_trial_report_the_same_metrics(toy, mlflow_uri, tmp_path,
                                                          monkeypatch):
    from platform.allocation.train import main

    import mlflow
    from ray import tune

    fields = {"num_env_runners": 0, "num_envs_per_env_runner": 1, "train_batch_size": 128,
              "minibatch_size": 64,
              "num_epochs": 1, "eval_episodes": 2, "hidden_sizes": [16], "iterations": 2,
              "checkpoint_every": 0}
    argv = ["--tracking-uri", mlflow_uri, "--experiment", "loop-test", "--scenario", TOY,
            "--lambda", "0.2", "--seed", "5", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}"]
    argv += [a for k, v in fields.items() for a in ("--set", f"{k}={v}")]
    assert main("group-robust-ppo", argv) == 0
    client = mlflow.MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("loop-test").experiment_id])

    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    S.allocation_trial({"algorithm": "group-robust-ppo", "base": fields,
                        "cell": {"scenario": TOY, "robust_lambda": 0.2, "seed": 5}})
    assert [r[S.STEP_KEY] for r in reports] == [1, 2]
    swept = {k for r in reports for k in r} - {S.STEP_KEY, S.EPISODES_KEY} | {"training_iteration"}
    assert set(run.data.metrics) == swept
    last = reports[-1]
    for key in SAME_VALUES:
        assert run.data.metrics[key] == pytest.approx(last[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sweep_trial_waits_for_a_restarted_env_runner(ray_session, monkeypatch, capsys):
    """SIGKILL the trial's only env runner after iteration 1: the next train() samples nothing
    (RLlib makes no update), the loop waits for the restarted runner and does iteration 2
    again, so every reported iteration trained on a full batch (issue 17 item 3)."""
    from ray import tune

    algos, reports = [], []
    build = loop.build_algo
    monkeypatch.setattr(loop, "build_algo", lambda cfg: algos.append(build(cfg)) or algos[-1])

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if len(reports) == 1:
            (pid,) = rllib.remote_env_runner_pids(algos[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    base = {"num_env_runners": 1, "train_batch_size": 200, "minibatch_size": 100,
            "num_epochs": 1, "hidden_sizes": [16], "iterations": 3, "eval_episodes": 0,
            "checkpoint_every": 0}
    S.allocation_trial({"algorithm": "group-robust-ppo", "base": base,
                        "cell": {"scenario": "rural", "robust_lambda": 0.3, "seed": 0}})
    assert [r[S.STEP_KEY] for r in reports] == [1, 2, 3]
    assert "iteration 2: no samples" in capsys.readouterr().err  # the loop waited
    assert all(r["env_steps_per_s"] > 0 for r in reports)  # no iteration without samples
    # 4 train() calls for 3 iterations; the empty one sampled nothing, so the lifetime count
    # is exactly 3 full batches (RLlib rounds 200 up to whole env-runner rounds)
    totals = [r["env_steps_total"] for r in reports]
    assert totals[0] >= 200 and totals == [totals[0], 2 * totals[0], 3 * totals[0]], totals
    assert reports[1]["fault_tolerance/env_runner_restarts"] >= 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_eval_every_logs_the_evaluation_curve(toy):
    """``eval_every``: every N iterations and after the last, the greedy evaluation on the
    evaluation seeds as ``eval_curve/...`` metrics (what the report's convergence check reads)."""
    cfg = toy_config(iterations=3, eval_every=2, eval_episodes=2, checkpoint_every=0)
    sink = RecordingSink()
    loop.train(cfg, sink)
    curve = [sorted(k for k in s.metrics if k.startswith(loop.CURVE_PREFIX)) for s in sink.steps]
    assert curve[0] == [] and curve[1] == curve[2]  # iteration 2 (due) and 3 (the last)
    assert {"eval_curve/return", "eval_curve/fairness/dp_score",
            "eval_curve/group/young/return_per_capita"} <= set(curve[1])
    final = sink.steps[-1]
    assert final.metrics["eval_curve/return"] == pytest.approx(final.evaluation["return"].mean())
    with pytest.raises(Exception, match="eval_every: got 2 with eval_episodes 0"):
        toy_config(eval_every=2, eval_episodes=0)
