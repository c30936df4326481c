"""Group-robust PPO on RLlib (platform.allocation.rllib): the connector, the config, Tune
registration, and the invariants against RLlib PPO (λ = 0 is PPO; one group -> robust term 0;
FairGrad). The math alone is tested in tests/algorithms/test_group_robust.py.

Uses a tiny two-group env defined here (fast, and independent of the hospital simulators).
"""

from __future__ import annotations

from platform.allocation.rllib import (
    ALGO_NAME,
    GROUP_COLUMN,
    AddGroupIdsToBatch,
    GroupRobustPPO,
    GroupRobustPPOConfig,
)

import gymnasium as gym
import numpy as np
import pytest
import torch


class TwoGroupEnv(gym.Env):
    """Patients of ``n_groups`` groups arrive one per step; action 1 = treat.

    Observation: one-hot group + a noise feature. Group 0 (75% of arrivals) is rewarded
    for treatment, group 1 for waiting, with half the reward, so groups differ.
    Like the hospital simulators, ``info["group"]`` of a step is the group of the patient
    that step's decision concerned (the reset info names the first patient's group).
    """

    def __init__(self, config: dict | None = None):
        config = config or {}
        self.n_groups = int(config.get("n_groups", 2))
        self.horizon = int(config.get("horizon", 16))
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (self.n_groups + 1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.group_names = [f"g{i}" for i in range(self.n_groups)]

    def _arrive(self):
        p = None if self.n_groups == 1 else [0.75] + [0.25 / (self.n_groups - 1)] * (self.n_groups - 1)
        self.g = int(self.np_random.choice(self.n_groups, p=p))
        obs = np.zeros(self.n_groups + 1, np.float32)
        obs[self.g] = 1.0
        obs[-1] = self.np_random.uniform(-1, 1)
        return obs, {"group": self.g, "n_groups": self.n_groups}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._arrive()

    def step(self, action):
        decided = self.g
        reward = float(int(action) == (1 if decided == 0 else 0)) * (1.0 if decided == 0 else 0.5)
        self.t += 1
        obs, _ = self._arrive()
        info = {"group": decided, "n_groups": self.n_groups}  # the group this decision concerned
        return obs, reward, False, self.t >= self.horizon, info


def _config(cls, seed=7, n_groups=2, **training):
    return (
        cls()
        .environment(TwoGroupEnv, env_config={"n_groups": n_groups})
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=2, lr=1e-3,
                  **training)
        .debugging(seed=seed)
    )


def _build(cfg):
    """Build outside Tune with the log dir under the session's storage (not ~/ray_results)."""
    import os
    from platform.allocation.rllib import build_algo

    return build_algo(cfg, os.environ["EQUIRL_STORAGE"], "test-grppo")


def _weights(algo) -> dict[str, torch.Tensor]:
    from platform.allocation.rllib import module_weights

    return module_weights(algo)


# ----------------------------------------------------------------------- connector
def test_connector_reads_the_group_of_each_decision():
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    infos = [{"group": g} for g in (1, 0, 0, 1)]
    episode = SingleAgentEpisode(observations=[0, 1, 2, 3], actions=[0, 1, 0],
                                 rewards=[0.0, 1.0, 0.0], infos=infos, len_lookback_buffer=0)
    batch: dict = {}
    AddGroupIdsToBatch()(rl_module=None, batch=batch, episodes=[episode], shared_data={})
    (items,) = batch[GROUP_COLUMN].values()
    assert list(items) == [0, 0, 1]  # infos[t + 1]: the info returned by step t


def test_connector_names_missing_group_key():
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    episode = SingleAgentEpisode(observations=[0, 1], actions=[0], rewards=[0.0],
                                 infos=[{"group": 0}, {}], len_lookback_buffer=0)
    with pytest.raises(KeyError, match="info\\['group'\\]"):
        AddGroupIdsToBatch()(rl_module=None, batch={}, episodes=[episode], shared_data={})


# -------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,allowed", [
    ("robust_lambda", 1.5, "in \\[0, 1\\]"), ("robust_lambda", -0.1, "in \\[0, 1\\]"),
    ("robust_mode", "median", "gap, worst_group"),
])
def test_config_validation_names_field(field, value, allowed):
    cfg = _config(GroupRobustPPOConfig).training(**{field: value})
    with pytest.raises(ValueError, match=f"{field}.*{allowed}"):
        cfg.validate()


def test_registered_with_tune():
    from platform.allocation.rllib import register

    from ray.tune.registry import get_trainable_cls

    register()
    assert get_trainable_cls(ALGO_NAME) is GroupRobustPPO


# -------------------------------------------------------------- learner invariants
@pytest.mark.timeout(300)
def test_lambda_zero_equals_rllib_ppo_and_lambda_positive_differs(ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    weights, results = {}, {}
    for name, cfg in (("ppo", _config(PPOConfig)),
                      ("l0", _config(GroupRobustPPOConfig, robust_lambda=0.0)),
                      ("l5", _config(GroupRobustPPOConfig, robust_lambda=0.5))):
        algo = _build(cfg)
        try:
            results[name] = algo.train()["learners"]["default_policy"]
            weights[name] = _weights(algo)
        finally:
            algo.stop()
    trainable = [k for k, v in weights["ppo"].items() if v.dtype.is_floating_point and v.numel() > 1]
    assert trainable
    for key in weights["ppo"]:
        assert torch.equal(weights["ppo"][key], weights["l0"][key]), key
    assert any(not torch.equal(weights["ppo"][k], weights["l5"][k]) for k in trainable)
    # λ = 0: the reported total loss is PPO's; both groups were seen and differ.
    assert results["l0"]["total_loss"] == pytest.approx(results["ppo"]["total_loss"], abs=0)
    assert {"group/0/objective", "group/1/objective"} <= set(results["l0"])
    assert results["l0"]["robust_loss"] > 0
    assert results["l0"]["group_gap"] == pytest.approx(results["l0"]["robust_loss"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["gap", "worst_group"])
def test_one_group_robust_term_is_zero_in_training(ray_session, mode):
    algo = _build(_config(GroupRobustPPOConfig, n_groups=1, robust_lambda=0.5, robust_mode=mode))
    try:
        learner = algo.train()["learners"]["default_policy"]
    finally:
        algo.stop()
    assert learner["robust_loss"] == 0.0
    assert learner["group_gap"] == 0.0
    assert "group/0/objective" in learner and "group/1/objective" not in learner


# ------------------------------------------------------------------------- FairGrad
def test_fairgrad_config_validation_names_field():
    with pytest.raises(ValueError, match="fairgrad.*true or false"):
        _config(GroupRobustPPOConfig).training(fairgrad="yes").validate()
    with pytest.raises(ValueError, match="fairgrad.*num_learners"):
        _config(GroupRobustPPOConfig, fairgrad=True).learners(num_learners=2).validate()


@pytest.mark.timeout(300)
def test_fairgrad_option_one_group_equals_ppo_two_groups_projects(ray_session):
    """``fairgrad=True``: with one group there is nothing to project (weights equal plain
    training); with two differing groups the per-group objectives change the update."""
    weights, results = {}, {}
    for name, n_groups, fairgrad in (("plain1", 1, False), ("fg1", 1, True),
                                     ("plain2", 2, False), ("fg2", 2, True)):
        algo = _build(_config(GroupRobustPPOConfig, n_groups=n_groups, robust_lambda=0.0,
                              fairgrad=fairgrad))
        try:
            results[name] = algo.train()["learners"]["default_policy"]
            weights[name] = _weights(algo)
        finally:
            algo.stop()
    for key in weights["plain1"]:
        assert torch.allclose(weights["plain1"][key], weights["fg1"][key], atol=1e-6), key
    assert results["fg1"]["fairgrad_conflicts"] == 0.0
    assert "fairgrad_conflicts" in results["fg2"]
    assert all(torch.isfinite(v).all() for v in weights["fg2"].values() if v.is_floating_point())
    assert any(not torch.allclose(weights["plain2"][k], weights["fg2"][k]) for k in weights["plain2"]
               if weights["plain2"][k].is_floating_point())
