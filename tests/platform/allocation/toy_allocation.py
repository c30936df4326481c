"""A tiny two-group env standing in for the hospital simulators (allocation tests).

Imported by the tests of this folder (``from toy_allocation import ...``); pickled by value
so that Ray workers (env runners) can build it.
"""

from __future__ import annotations

import sys
from platform.allocation import scenarios
from platform.allocation.config import AllocationConfig

import gymnasium as gym
import numpy as np

from base.config import build

TOY = "toy-two-group"


class ToyHospital(gym.Env):
    """Two groups (75% / 25% of arrivals); action 1 helps group 0, action 0 helps group 1.

    ``info["group"]`` and ``info["reward_by_group"]`` every step; ``info["episode_metrics"]``
    at the last step with a
    treatment-rate demographic-parity score (1 - |rate gap|, higher is fairer), like the
    hospital simulators.
    """

    def __init__(self, group_key: str = "age_group", horizon: int = 16, **_):
        self.horizon = horizon
        self.group_names = ["young", "old"]
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _arrive(self):
        self.g = int(self.np_random.random() < 0.25)
        obs = np.zeros(3, np.float32)
        obs[self.g], obs[2] = 1.0, self.np_random.uniform(-1, 1)
        return obs, {"group": self.g, "n_groups": 2}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.treated, self.seen = 0, np.zeros(2), np.zeros(2)
        return self._arrive()

    def step(self, action):
        g = self.g
        self.seen[g] += 1
        self.treated[g] += int(action)
        reward = float(int(action) == (1 - g)) * (1.0 if g == 0 else 0.5)
        self.t += 1
        obs, _ = self._arrive()
        by_group = np.zeros(2)
        by_group[g] = reward  # the decided patient's outcome is its group's stream
        info = {"group": g, "n_groups": 2,  # the group this decision concerned
                "reward_by_group": by_group, "reward_shared": 0.0}
        done = self.t >= self.horizon
        if done:
            rates = self.treated / np.maximum(self.seen, 1)
            info["episode_metrics"] = {
                "fairness/dp_score": float(1.0 - abs(rates[0] - rates[1])),
                "group/young/treat_rate": float(rates[0]),
                "group/old/treat_rate": float(rates[1]),
            }
        return obs, reward, False, done, info


def _toy_creator(env_config):
    return ToyHospital(**env_config)


def register_toy() -> str:
    """Register the toy scenario (driver registry; Tune envs pickle it by value)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    scenarios.register_scenario(TOY, _toy_creator, help="test env")
    return TOY


def toy_config(**kw) -> AllocationConfig:
    base = dict(scenario=TOY, num_env_runners=0, num_envs_per_env_runner=1,
                train_batch_size=128, minibatch_size=64,
                num_epochs=2, iterations=2, eval_episodes=3, checkpoint_every=1,
                hidden_sizes=[16])
    return build(AllocationConfig, {**base, **kw})
