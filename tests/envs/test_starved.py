"""StarvedMinority-v0: the gymnasium contract and the tension it exists to create."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from base.errors import ConfigError
from envs.starved import StarvedMinorityEnv


def _per_capita(policy, episodes=150, **cfg):
    env = StarvedMinorityEnv(cfg)
    total, count = np.zeros(2), np.zeros(2)
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        done = False
        while not done:
            obs, r, _, done, info = env.step(policy(obs))
            assert r == info["reward_shared"] + info["reward_by_group"].sum()
            total += info["reward_by_group"]
            count[info["group"]] += 1
    return total / count, total.sum() / episodes


def test_contract_and_determinism():
    env = gym.make("StarvedMinority-v0")
    check_env(env.unwrapped)
    a = [env.reset(seed=4)[0]] + [env.step(1)[0] for _ in range(20)]
    b = [env.reset(seed=4)[0]] + [env.step(1)[0] for _ in range(20)]
    np.testing.assert_array_equal(np.array(a), np.array(b))


def test_utilitarian_policy_starves_the_minority():
    util, util_total = _per_capita(lambda o: int(o[0] == 1))  # admit the majority only
    fair, fair_total = _per_capita(lambda o: 1)  # admit whoever arrives while beds are free
    assert util_total > 1.1 * fair_total  # the total prefers starving the minority
    assert util[1] == pytest.approx(-0.3) and fair[1] > util[1] + 0.2  # ... the minority pays
    assert fair[0] > 0.7 * util[0]  # at a bounded cost to the majority


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="majority_share"):
        StarvedMinorityEnv(majority_share=1.0)
