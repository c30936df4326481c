"""Group-robust (vector-reward) PPO on RLlib (platform.allocation.rllib): the streams
connector, per-group GAE through the real learner pipeline, the config, Tune registration, and
the invariants against RLlib PPO (λ = 0 is PPO bit for bit; one group is PPO for every mode;
FairGrad; GroupDRO weights survive a checkpoint). The math alone is tested in
tests/algorithms/test_group_robust.py; the learning effect in test_robust_learning.py.

Uses a tiny two-group env defined here (fast, and independent of the hospital simulators).
"""

from __future__ import annotations

from platform.allocation.rllib import (
    ALGO_NAME,
    GROUP_VALUE_TARGETS,
    GroupRobustPPO,
    GroupRobustPPOConfig,
    GroupStreams,
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
        by_group = np.zeros(self.n_groups)
        by_group[decided] = reward  # the decided patient's outcome is its group's
        info = {"group": decided, "n_groups": self.n_groups,  # the group this decision concerned
                "reward_by_group": by_group, "reward_shared": 0.0}
        return obs, reward, False, self.t >= self.horizon, info


def _config(cls, seed=7, n_groups=2, **training):
    if cls is GroupRobustPPOConfig:
        training["n_groups"] = n_groups
    cfg = (
        cls()
        .environment(TwoGroupEnv, env_config={"n_groups": n_groups})
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=2, lr=1e-3,
                  **training)
        .debugging(seed=seed)
    )
    if cls is GroupRobustPPOConfig:
        cfg.rl_module(model_config={"n_groups": n_groups})
    return cfg


def _build(cfg):
    """Build outside Tune with the log dir under the session's storage (not ~/ray_results)."""
    import os
    from platform.allocation.rllib import build_algo

    return build_algo(cfg, os.environ["EQUIRL_STORAGE"], "test-grppo")


def _weights(algo) -> dict[str, torch.Tensor]:
    from platform.allocation.rllib import module_weights

    return module_weights(algo)


# ----------------------------------------------------------------------- connector
def _episode(infos, n_obs=None):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    n = len(infos) - 1
    return SingleAgentEpisode(observations=list(range(n + 1)), actions=[0] * n,
                              rewards=[0.0] * n, infos=infos, len_lookback_buffer=0)


def test_streams_read_each_decision_and_zero_the_artificial_step():
    infos = [{"group": 1}] + [{"group": g, "reward_by_group": [float(g), 10.0 + t]}
                              for t, g in enumerate((0, 1, 1))]
    infos.append(dict(infos[-1]))  # PPO's artificial timestep duplicates the last info
    groups, rewards = GroupStreams(n_groups=2).streams([_episode(infos)])
    assert groups.tolist() == [0, 1, 1, 1]  # infos[t + 1]: the info returned by step t
    np.testing.assert_array_equal(rewards, [[0, 10], [1, 11], [1, 12], [0, 0]])


@pytest.mark.parametrize("info,error", [
    ({"group": 0}, "info\\['reward_by_group'\\].*episode .* timestep 1"),
    ({"reward_by_group": [0.0, 0.0]}, "info\\['group'\\].*timestep 1"),
    ({"group": 0, "reward_by_group": [1.0]}, "1 entries at episode .* timestep 1; expected one "
                                            "per group \\(2\\)"),
    ({"group": 2, "reward_by_group": [0.0, 0.0]}, "allowed: 0..1"),
])
def test_streams_name_a_missing_or_wrong_key(info, error):
    ok = {"group": 0, "reward_by_group": [0.0, 0.0]}
    episode = _episode([ok, ok, info, dict(info)])
    with pytest.raises((KeyError, ValueError), match=error):
        GroupStreams(n_groups=2).streams([episode])


def _slow_group_targets(module, episodes, gamma, lam):
    """The definition, episode by episode and group by group (truncated: bootstrap V(s_n))."""
    rows = []
    for ep in episodes:
        obs = torch.as_tensor(np.asarray(ep.get_observations()), dtype=torch.float32)
        with torch.no_grad():
            v = module.compute_group_values({"obs": obs}).double().numpy()  # (n + 1, G)
        infos = ep.get_infos()
        r = np.array([infos[t + 1]["reward_by_group"] for t in range(len(ep))])
        boot = 0.0 if ep.is_terminated else v[-1]
        n, G = r.shape
        adv = np.zeros((n, G))
        running = np.zeros(G)
        for t in reversed(range(n)):
            nxt = v[t + 1] if t + 1 < n else boot
            running = r[t] + gamma * nxt - v[t] + gamma * lam * running
            adv[t] = running
        rows.append(adv + v[:n])
    return rows


@pytest.mark.timeout(300)
def test_group_gae_through_the_learner_pipeline_matches_the_definition(ray_session):
    cfg = _config(GroupRobustPPOConfig, robust_lambda=0.5).training(gamma=0.9, lambda_=0.8)
    algo = _build(cfg)
    try:
        algo.train()  # trained group heads: values differ per group and state
        learner = algo.learner_group._learner
        module = learner.module["default_policy"].unwrapped()
        episodes = algo.env_runner.sample(num_timesteps=100, random_actions=True)
        expected = _slow_group_targets(module, episodes, 0.9, 0.8)
        batch = learner._learner_connector(rl_module=learner.module, batch={},
                                           episodes=episodes, shared_data={},
                                           metrics=learner.metrics)["default_policy"]
    finally:
        algo.stop()
    mask = batch["loss_mask"].numpy().astype(bool)
    got = batch[GROUP_VALUE_TARGETS].numpy()[mask]
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=1e-4, atol=1e-4)
    assert np.abs(got[:, 0] - got[:, 1]).max() > 1e-3  # two different streams


# -------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,allowed", [
    ("robust_lambda", 1.5, "in \\[0, 1\\]"), ("robust_lambda", -0.1, "in \\[0, 1\\]"),
    ("robust_mode", "median", "gap, ggf, worst_group"), ("n_groups", 0, "int >= 1"),
    ("robust_eta", -1.0, "must be > 0"),
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
def _ppo_keys(weights_ppo):
    return [k for k, v in weights_ppo.items() if v.dtype.is_floating_point and v.numel() > 1]


@pytest.mark.timeout(300)
def test_lambda_zero_equals_rllib_ppo_and_lambda_positive_differs(ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    weights, results = {}, {}
    for name, cfg in (("ppo", _config(PPOConfig)),
                      ("l0", _config(GroupRobustPPOConfig, robust_lambda=0.0)),
                      ("l5", _config(GroupRobustPPOConfig, robust_lambda=0.5))):
        algo = _build(cfg)
        try:
            algo.train()
            results[name] = algo.train()["learners"]["default_policy"]
            weights[name] = _weights(algo)
        finally:
            algo.stop()
    trainable = _ppo_keys(weights["ppo"])
    assert trainable
    for key in weights["ppo"]:  # every PPO parameter, bit for bit, after two iterations
        assert torch.equal(weights["ppo"][key], weights["l0"][key]), key
    assert any(not torch.equal(weights["ppo"][k], weights["l5"][k]) for k in trainable)
    assert any(k.startswith("group_vf.") for k in weights["l0"])
    # λ = 0: PPO's policy and value losses; the total adds only the group heads' regression
    l0, ppo = results["l0"], results["ppo"]
    assert l0["policy_loss"] == ppo["policy_loss"] and l0["vf_loss"] == ppo["vf_loss"]
    assert l0["total_loss"] == pytest.approx(ppo["total_loss"] + l0["group_vf_loss"], rel=1e-6)
    assert {"robust/weight/0", "robust/weight/1", "group/0/value_per_capita",
            "group/1/value_per_capita"} <= set(l0)
    assert l0["robust/weight/0"] + l0["robust/weight/1"] == pytest.approx(1.0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["gap", "worst_group", "ggf"])
def test_one_group_is_ppo_for_every_mode(ray_session, mode):
    from ray.rllib.algorithms.ppo import PPOConfig

    weights = {}
    for name, cfg in (("ppo", _config(PPOConfig, n_groups=1)),
                      ("robust", _config(GroupRobustPPOConfig, n_groups=1, robust_lambda=0.5,
                                         robust_mode=mode))):
        algo = _build(cfg)
        try:
            algo.train()
            weights[name] = _weights(algo)
        finally:
            algo.stop()
    for key in weights["ppo"]:
        assert torch.equal(weights["ppo"][key], weights["robust"][key]), key


@pytest.mark.timeout(300)
def test_groupdro_weights_are_checkpointed(ray_session, tmp_path):
    from platform.allocation.rllib import restore_checkpoint, save_checkpoint

    cfg = _config(GroupRobustPPOConfig, robust_lambda=0.5, robust_mode="worst_group",
                  robust_eta=2.0)
    algo = _build(cfg)
    try:
        for _ in range(2):
            algo.train()
        q = _weights(algo)["robust_q"].clone()
        save_checkpoint(algo, tmp_path / "ckpt")
    finally:
        algo.stop()
    assert not torch.allclose(q, torch.full_like(q, 0.5))  # the weights moved
    fresh = _build(cfg)
    try:
        restore_checkpoint(fresh, tmp_path / "ckpt")
        assert torch.allclose(_weights(fresh)["robust_q"], q, rtol=1e-6, atol=0)  # float32 state
    finally:
        fresh.stop()


# ------------------------------------------------------------------------- FairGrad
def test_fairgrad_config_validation_names_field():
    with pytest.raises(ValueError, match="fairgrad.*true or false"):
        _config(GroupRobustPPOConfig).training(fairgrad="yes").validate()
    with pytest.raises(ValueError, match="fairgrad.*num_learners"):
        _config(GroupRobustPPOConfig, fairgrad=True).learners(num_learners=2).validate()


@pytest.mark.timeout(300)
def test_fairgrad_option_one_group_equals_ppo_two_groups_projects(ray_session):
    """``fairgrad=True``: with one group there is nothing to project (weights equal plain
    training); with two streams the per-group objectives change the update."""
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
    assert "fairgrad_conflicts" not in results["fg1"]  # one group: nothing to project
    assert "fairgrad_conflicts" in results["fg2"]
    assert all(torch.isfinite(v).all() for v in weights["fg2"].values() if v.is_floating_point())
    assert any(not torch.allclose(weights["plain2"][k], weights["fg2"][k]) for k in weights["plain2"]
               if weights["plain2"][k].is_floating_point())
