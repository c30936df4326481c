"""``HospitalVectorEnv``: N hospitals stepped in lockstep by one numpy core.

Same semantics as ``gymnasium.vector.SyncVectorEnv`` over N ``HospitalEnv``: hospital i is
seeded with ``seed + i``, autoreset is ``NEXT_STEP`` (the step after a hospital's episode ends
resets it, ignores its action and returns reward 0), and infos are dicts of arrays with
``_key`` masks. Registered as the ``vector_entry_point`` of every hospital id:
``gymnasium.make_vec("HospitalUrban-v0", num_envs=64, vectorization_mode="vector_entry_point")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.hospital.config import HospitalConfig
from envs.hospital.core import N_ACTIONS, HospitalCore
from envs.hospital.env import reset_output, resolve_config
from envs.hospital.metrics import episode_metrics

_SCALAR_INFO = (
    "group",
    "severity",
    "action",
    "treated",
    "success",
    "transferred",
    "invalid",
    "wait",
)
_INFO_DTYPES = {
    "group": np.int64,
    "severity": np.int64,
    "action": np.int64,
    "treated": np.bool_,
    "success": np.bool_,
    "transferred": np.bool_,
    "invalid": np.bool_,
    "wait": np.float64,
}


class HospitalVectorEnv(VectorEnv):
    """N copies of one hospital config; see the module docstring and ``HospitalEnv``."""

    metadata: ClassVar[dict] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        config: HospitalConfig | dict | str | Path | None = None,
        scenario: str | None = None,
        **overrides: Any,
    ):
        overrides.pop("render_mode", None)
        self.config = resolve_config(config, scenario, **overrides)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.core = HospitalCore(self.config, self.num_envs)
        self.group_names = list(self.config.group_names)
        self.n_groups = len(self.group_names)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (self.core.obs_dim,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"seed list has {len(seed)} entries, expected {self.num_envs}")
            seeds = list(seed)
        for b, s in enumerate(seeds):
            self.core.reset_one(b, seeding.np_random(s)[0])
        self._needs_reset[:] = False
        return self.core.observe(), self._infos(
            reset_output(self.core), np.zeros(self.num_envs, bool)
        )

    def step(self, actions):
        actions = np.asarray(actions, np.int64).reshape(self.num_envs)
        resetting = self._needs_reset.copy()
        out = self.core.step(actions, active=~resetting)
        truncated = out["truncated"] & ~resetting
        done = np.flatnonzero(truncated)
        metrics = {int(b): episode_metrics(self.core.episode_log(int(b))) for b in done}
        reward = np.where(resetting, 0.0, out["reward"])
        out["reward_by_group"] = np.where(resetting[:, None], 0.0, out["reward_by_group"])
        out["reward_shared"] = np.where(resetting, 0.0, out["reward_shared"])
        if resetting.any():
            for b in np.flatnonzero(resetting):
                self.core.reset_one(int(b), self.core.rngs[b])
            first = reset_output(self.core)
            for key, val in first.items():
                out[key] = np.where(resetting.reshape((-1,) + (1,) * (val.ndim - 1)), val, out[key])
        infos = self._infos(out, truncated, metrics)
        self._needs_reset = truncated
        terminated = np.zeros(self.num_envs, bool)
        return self.core.observe(), reward, terminated, truncated, infos

    def _infos(
        self, out: dict[str, np.ndarray], done: np.ndarray, metrics: dict | None = None
    ) -> dict:
        n = self.num_envs
        ones = np.ones(n, bool)
        infos: dict[str, Any] = {}
        for key in _SCALAR_INFO:
            infos[key] = np.asarray(out[key], _INFO_DTYPES[key]).copy()
            infos[f"_{key}"] = ones
        infos["n_groups"], infos["_n_groups"] = np.full(n, self.n_groups), ones
        for key in ("occupancy", "capacity"):
            infos[key], infos[f"_{key}"] = np.asarray(out[key], np.int64).copy(), ones
        infos["reward_by_group"] = np.asarray(out["reward_by_group"], np.float64).copy()
        infos["reward_shared"] = np.asarray(out["reward_shared"], np.float64).copy()
        infos["_reward_by_group"] = infos["_reward_shared"] = ones
        for b, m in (metrics or {}).items():
            self._add_info(infos, {"episode_metrics": m}, b)
        return infos

    def episode_log(self, index: int) -> dict:
        """The current episode's log of hospital ``index``."""
        return self.core.episode_log(index)
