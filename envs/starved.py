"""``StarvedMinority-v0``: the smallest allocation problem where a utilitarian policy starves
a minority group, so a group-robust objective has a known right answer to reach.

One patient arrives per step: majority (group 0, share ``majority_share``) or minority
(group 1). Action 1 admits the patient to a free bed (held for ``stay`` steps); action 0, or
1 with no bed free, turns the patient away. An admitted patient recovers with probability
``success`` of their group (majority 0.9, minority 0.2 by default): reward +1 to that
group's stream. A patient turned away costs ``turned_away`` to their group's stream.

Beds are scarce (``beds`` / ``stay`` < 1 admission per step), so maximising the total reward
means keeping beds for the majority, whose treatment succeeds 4.5 times as often: the
utilitarian policy turns the minority away and its per-capita return is ``-turned_away``.
Measured with the defaults (200 episodes, per-capita return majority / minority, total per
episode): majority only 0.399 / -0.300, 16.5; admit everyone while beds are free 0.297 /
-0.055, 14.5. Serving the minority costs the majority about a quarter of its return.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from base.errors import require

GROUP_NAMES = ("majority", "minority")


class StarvedMinorityEnv(gym.Env):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict | None = None, **kwargs: Any):
        c = {**(config or {}), **kwargs}
        self.majority_share = float(c.get("majority_share", 0.8))
        self.success = np.asarray(c.get("success", (0.9, 0.2)), np.float64)
        self.beds = int(c.get("beds", 2))
        self.stay = int(c.get("stay", 4))
        self.turned_away = float(c.get("turned_away", 0.3))
        self.horizon = int(c.get("horizon", 64))
        require(0.0 < self.majority_share < 1.0, "majority_share",
                f"{self.majority_share} must be in (0, 1)")
        require(self.beds >= 1 and self.stay >= 1, "beds", "beds and stay must be >= 1")
        require(self.success.shape == (2,) and ((0 <= self.success) & (self.success <= 1)).all(),
                "success", f"{self.success.tolist()} must be two probabilities")
        self.group_names = list(GROUP_NAMES)
        self.n_groups = 2
        self.observation_space = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _arrive(self) -> None:
        self.group = int(self.np_random.random() >= self.majority_share)

    def _obs(self) -> np.ndarray:
        free = (self.busy == 0).sum()
        soonest = self.busy[self.busy > 0].min() if free < self.beds else 0
        return np.array([self.group == 0, self.group == 1, free / self.beds,
                         soonest / self.stay, self.t / self.horizon], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.busy = np.zeros(self.beds, np.int64)  # steps left per bed
        self._arrive()
        return self._obs(), {"group": self.group, "n_groups": 2}

    def step(self, action):
        g = self.group
        by_group = np.zeros(2)
        free = np.flatnonzero(self.busy == 0)
        treated = bool(int(action) == 1 and free.size)
        success = False
        if treated:
            self.busy[free[0]] = self.stay
            success = bool(self.np_random.random() < self.success[g])
            by_group[g] = 1.0 if success else 0.0
        else:
            by_group[g] = -self.turned_away
        self.busy = np.maximum(self.busy - 1, 0)
        self.t += 1
        self._arrive()
        info = {"group": g, "n_groups": 2, "reward_by_group": by_group, "reward_shared": 0.0,
                "treated": treated, "success": success}
        return self._obs(), float(by_group.sum()), False, self.t >= self.horizon, info
