"""Training on the batched simulator (``env_vectorize=batched``, RLlib's
``gym_env_vectorize_mode="vector_entry_point"``) sees the same episodes as training on
gymnasium's SyncVectorEnv of single hospitals, inside RLlib, for the same seed.

What is identical, bit for bit: every episode's observations, actions, rewards, truncation
flags and step infos (``group``, ``reward_by_group``, ``reward_shared``, the decision fields,
and the fairness, wait and patient-count entries of ``episode_metrics``), so the learner's
weights after training are identical too. What is not: the utilisation entries of
``episode_metrics`` (``util/*``) are integrals of bed occupancy over time, a
(hospitals x beds) @ (beds x 3) matrix product whose BLAS summation order depends on the
number of hospitals in the batch; they agree to 1e-12 relative, and nothing the policy
sees or is rewarded for depends on them.
"""

from __future__ import annotations

from platform.allocation import loop, rllib, scenarios

import numpy as np
import pytest
import torch

from base.config import build

N_ENVS, HORIZON = 3, 20


@pytest.fixture(scope="module")
def runs(ray_session):
    """The same config trained twice (2 iterations), batched and sync, every sampled
    episode recorded from the (local) env runner."""
    from platform.allocation.config import AllocationConfig

    out = {}
    for mode in ("batched", "sync"):
        cfg = build(AllocationConfig, {
            "scenario": "rural", "env_vectorize": mode, "num_env_runners": 0,
            "num_envs_per_env_runner": N_ENVS, "train_batch_size": N_ENVS * 16,
            "minibatch_size": 24, "num_epochs": 1, "hidden_sizes": [16], "robust_lambda": 0.3,
            "seed": 11, "eval_episodes": 0, "env_config": {"max_decisions": HORIZON}})
        algo = loop.build_algo(cfg)
        try:
            episodes = []
            runner = algo.env_runner
            sample = runner.sample

            def recording(*args, _sample=sample, _episodes=episodes, **kwargs):
                result = _sample(*args, **kwargs)
                _episodes.extend(result)
                return result

            runner.sample = recording
            results = [algo.train() for _ in range(2)]
            out[mode] = {"cfg": cfg, "env": runner.env.unwrapped, "episodes": episodes,
                         "weights": rllib.module_weights(algo),
                         "metrics": loop.iteration_metrics(results[-1])}
        finally:
            algo.stop()
    return out


def test_the_batched_env_is_the_hospital_vector_env(runs):
    from gymnasium.vector import SyncVectorEnv

    from envs.hospital.vector import HospitalVectorEnv

    assert isinstance(runs["batched"]["env"], HospitalVectorEnv)
    assert isinstance(runs["sync"]["env"], SyncVectorEnv)
    assert runs["batched"]["cfg"].vectorize_mode == "batched"
    assert runs["sync"]["cfg"].vectorize_mode == "sync"


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if where.endswith("episode_metrics") and k.startswith("util/"):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, err_msg=f"{where}/{k}")
            else:
                _same(a[k], b[k], f"{where}/{k}")
        return
    np.testing.assert_array_equal(a, b, err_msg=where)
    assert np.asarray(a).dtype == np.asarray(b).dtype, where


def test_identical_episodes_infos_and_weights(runs):
    batched, sync = runs["batched"]["episodes"], runs["sync"]["episodes"]
    assert len(batched) == len(sync) >= 2 * N_ENVS
    ended = 0
    for i, (a, b) in enumerate(zip(batched, sync)):
        assert len(a) == len(b) and a.t_started == b.t_started, i
        for name in ("get_observations", "get_actions", "get_rewards"):
            np.testing.assert_array_equal(getattr(a, name)(), getattr(b, name)(), err_msg=f"{i} {name}")
        assert (a.is_terminated, a.is_truncated) == (b.is_terminated, b.is_truncated)
        infos_a, infos_b = list(a.get_infos()), list(b.get_infos())
        assert len(infos_a) == len(infos_b) == len(a) + 1
        for t, (x, y) in enumerate(zip(infos_a, infos_b)):
            _same(x, y, f"episode {i} info {t}")
        assert all("reward_by_group" in x and "group" in x for x in infos_a)
        ended += "episode_metrics" in infos_a[-1]
    assert ended >= N_ENVS  # whole episodes (with their metrics) went through both paths
    wa, wb = runs["batched"]["weights"], runs["sync"]["weights"]
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = runs["batched"]["metrics"], runs["sync"]["metrics"]
    for key in ("return_mean", "group_gap", "fairness/dp_score", "group/0/return_per_capita",
                "robust/weight/0", "loss/total"):
        assert ma[key] == mb[key], key


def test_scenarios_without_a_batched_env_fall_back_to_sync(ray_session, capsys):
    from platform.allocation.config import AllocationConfig

    assert scenarios.vectorized("rural") and scenarios.vectorized("HospitalUrban-v0")
    assert not scenarios.vectorized("starved")
    cfg = build(AllocationConfig, {"scenario": "starved", "num_env_runners": 0})
    assert cfg.env_vectorize == "batched" and cfg.vectorize_mode == "sync"
    algo_cfg = loop.build_algo_config(cfg)
    assert algo_cfg.gym_env_vectorize_mode == "sync"
    assert "scenario 'starved' has no batched env" in capsys.readouterr().err
    from base.config import tracked_params

    assert tracked_params(cfg)["env_vectorize"] == "sync"  # the mode actually used
    rural = build(AllocationConfig, {"scenario": "rural"})
    assert loop.build_algo_config(rural).gym_env_vectorize_mode == "vector_entry_point"
    assert tracked_params(rural)["env_vectorize"] == "batched"
