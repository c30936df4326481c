"""``python -m platform.train group-robust-ppo|ppo`` on the real hospital simulators.

Bad input -> one clear line, exit code 2, no MLflow run; env-runner fault tolerance.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--set", "train_batch_size=200", "--set", "minibatch_size=100", "--set", "num_epochs=1",
        "--set", "eval_episodes=1", "--set", "hidden_sizes=[16]"]


def _train(repo_root, env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "platform.train", *args], cwd=repo_root,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _mlflow_runs(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select run_uuid, status from runs").fetchall()
        except sqlite3.OperationalError:  # no tables: nothing was ever created
            return []


def _bad_cases(tmp_path: Path, free_port: int) -> dict[str, tuple[list[str], str]]:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("robust_lambda: [unclosed\n")
    return {
        "algorithm": (["dqn"], "unknown algorithm 'dqn'; known: .*group-robust-ppo"),
        "scenario": (["group-robust-ppo", "--scenario", "mars"],
                     "scenario: got 'mars'; allowed: .*rural.*urban"),
        "lambda": (["group-robust-ppo", "--lambda", "1.5"],
                   "robust_lambda: got 1.5; allowed: a number in \\[0, 1\\]"),
        "iterations": (["ppo", "--iterations", "0"], "iterations: got 0; must be >= 1"),
        "mode": (["group-robust-ppo", "--mode", "median"],
                 "robust_mode: got 'median'; allowed: gap, ggf, worst_group"),
        "config-missing": (["ppo", "--config", str(tmp_path / "nope.yaml")],
                           "--config: cannot read .*nope.yaml"),
        "config-invalid": (["ppo", "--config", str(bad_yaml)], "--config: .*bad.yaml is not valid YAML"),
        "unknown-field": (["ppo", "--set", "lamda=0.1"], "lamda: unknown field; allowed: .*robust_lambda"),
        "tracking": (["ppo", "--tracking-uri", f"http://127.0.0.1:{free_port}"],
                     f"--tracking-uri: cannot reach MLflow server http://127.0.0.1:{free_port}"),
        "resume": (["group-robust-ppo", "--resume", "--run-name", "never-ran"],
                   "--resume: no run named 'never-ran' with a checkpoint"),
    }


@pytest.mark.parametrize("case", ["algorithm", "scenario", "lambda", "iterations", "mode",
                                  "config-missing", "config-invalid", "unknown-field", "tracking",
                                  "resume"])
def test_bad_input_exit_2_clear_message_no_run(repo_root, run_env, tmp_path, free_port, case):
    import re

    args, pattern = _bad_cases(tmp_path, free_port)[case]
    db = tmp_path / "mlflow.db"
    if not any(a == "--tracking-uri" for a in args):
        args = args + ["--tracking-uri", f"sqlite:///{db}"]
    res = _train(repo_root, run_env(EQUIRL_STORAGE=str(tmp_path / "store")), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    message = res.stderr[res.stderr.find("error: "):]
    assert res.stderr.count("error: ") == 1 and re.search(pattern, message), res.stderr
    assert "Traceback" not in res.stderr
    assert all(status != "RUNNING" for _, status in _mlflow_runs(db))
    assert _mlflow_runs(db) == []


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_env_runner_killed_mid_training_run_completes(ray_session):
    """SIGKILL the only remote env runner: Ray restarts it, RLlib takes it back, and the
    iteration count goes on without a gap (iterations while it restarts sample nothing)."""
    from platform.allocation import rllib
    from platform.allocation.config import AllocationConfig
    from platform.allocation.loop import build_algo, iteration_metrics

    from base.config import build

    cfg = build(AllocationConfig, dict(scenario="rural", num_env_runners=1, train_batch_size=200,
                                       minibatch_size=100, num_epochs=1, hidden_sizes=[16]))
    algo = build_algo(cfg)
    try:
        results = [algo.train()]
        (pid,) = rllib.remote_env_runner_pids(algo)
        os.kill(pid, signal.SIGKILL)
        results.append(algo.train())  # notices the failure
        assert rllib.wait_for_env_runners(algo, timeout_s=240)
        results += [algo.train() for _ in range(2)]
        new_pids = rllib.remote_env_runner_pids(algo)
    finally:
        algo.stop()
    iterations = [iteration_metrics(r)["training_iteration"] for r in results]
    assert iterations == [1.0, 2.0, 3.0, 4.0]
    assert len(new_pids) == 1 and new_pids[0] != pid
    assert max(rllib.num_env_runner_restarts(r) for r in results) >= 1
    assert all(rllib.env_steps_this_iter(r) >= cfg.train_batch_size for r in results[-2:])


def test_env_runner_killed_while_sampling_leaves_every_batch_full(ray_session):
    """Issue 17 item 3: SIGKILL one of two env runners while it samples. The iteration still
    trains on a full batch (the survivor samples again until train_batch_size env steps are
    in; RLlib drops the dead runner's unfinished fragment, nothing is counted twice), every
    iteration after it too, and the run goes on with the runner restarted.

    With a single env runner the train() during which it dies samples nothing and RLlib skips
    its update (PPO's training_step returns early); the loop redoes that iteration
    (tests/platform/allocation/test_loop.py::test_sweep_trial_waits_for_a_restarted_env_runner)."""
    import threading
    import time

    from platform.allocation import rllib
    from platform.allocation.config import AllocationConfig
    from platform.allocation.loop import build_algo, iteration_metrics

    from base.config import build

    batch = 4000
    cfg = build(AllocationConfig, dict(scenario="rural", num_env_runners=2, train_batch_size=batch,
                                       minibatch_size=1000, num_epochs=1, hidden_sizes=[16],
                                       num_envs_per_env_runner=2))
    algo = build_algo(cfg)
    try:
        start = time.perf_counter()
        results = [algo.train()]
        took = time.perf_counter() - start
        victim = rllib.remote_env_runner_pids(algo)[0]
        fired: dict[str, float] = {}

        def kill():
            fired["at"] = time.perf_counter()
            os.kill(victim, signal.SIGKILL)

        timer = threading.Timer(min(0.3 * took, 1.0), kill)
        timer.start()  # lands while the runners sample the next batch
        results.append(algo.train())
        returned = time.perf_counter()
        timer.join()
        assert fired["at"] < returned, "the kill did not land while iteration 2 ran"
        assert rllib.wait_for_env_runners(algo, timeout_s=240)
        results += [algo.train() for _ in range(2)]
        pids = rllib.remote_env_runner_pids(algo)
    finally:
        algo.stop()
    assert [iteration_metrics(r)["training_iteration"] for r in results] == [1.0, 2.0, 3.0, 4.0]
    steps = [rllib.env_steps_this_iter(r) for r in results]
    assert all(batch <= s < batch + batch // 2 for s in steps), steps  # full, no double batch
    assert victim not in pids and len(pids) == 2
    assert max(rllib.num_env_runner_restarts(r) for r in results) >= 1
