"""``HospitalEnv``: one simulated hospital as a gymnasium env (the core with B = 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from base.errors import ConfigError
from envs.hospital.config import HospitalConfig, scenario_config
from envs.hospital.core import N_ACTIONS, HospitalCore
from envs.hospital.metrics import episode_metrics


def resolve_config(
    config: HospitalConfig | dict | str | Path | None = None,
    scenario: str | None = None,
    **overrides: Any,
) -> HospitalConfig:
    """One validated config from a dataclass, a mapping, a YAML path or a scenario name."""
    if isinstance(config, HospitalConfig):
        return HospitalConfig.from_dict(overrides, config) if overrides else config
    if isinstance(config, (str, Path)):
        return HospitalConfig.from_dict(overrides, HospitalConfig.from_yaml(config))
    if config is not None and not isinstance(config, dict):
        raise ConfigError(
            "config",
            f"expected a HospitalConfig, mapping or YAML path, got {type(config).__name__}",
        )
    data = dict(config or {})
    data.update(overrides)
    if scenario is None:
        scenario = data.pop("scenario", None)
    if scenario is not None:
        return scenario_config(scenario, **data)
    return HospitalConfig.from_dict(data)


def step_info(out: dict[str, np.ndarray], b: int, n_groups: int) -> dict[str, Any]:
    """Per-decision info of hospital ``b`` from the core's step output."""
    return {
        "group": int(out["group"][b]),
        "n_groups": n_groups,
        "severity": int(out["severity"][b]),
        "action": int(out["action"][b]),
        "treated": bool(out["treated"][b]),
        "success": bool(out["success"][b]),
        "transferred": bool(out["transferred"][b]),
        "invalid": bool(out["invalid"][b]),
        "wait": float(out["wait"][b]),
        "occupancy": out["occupancy"][b].copy(),
        "capacity": out["capacity"][b].copy(),
        "reward_by_group": out["reward_by_group"][b].copy(),
        "reward_shared": float(out["reward_shared"][b]),
    }


def reset_output(core: HospitalCore) -> dict[str, np.ndarray]:
    """The info fields for the first decision of an episode (nothing decided yet)."""
    ar = np.arange(core.B)
    pid = core.cur_pid
    z = np.zeros(core.B, bool)
    return {
        "group": core.p["group"][ar, pid],
        "severity": core.p["sev"][ar, pid],
        "action": np.full(core.B, -1),
        "treated": z,
        "success": z,
        "transferred": z,
        "invalid": z,
        "wait": core.t - core.p["arrival"][ar, pid],
        "occupancy": core.occ.copy(),
        "capacity": core.cap.copy(),
        "reward_by_group": np.zeros((core.B, core.G)),
        "reward_shared": np.zeros(core.B),
    }


class HospitalEnv(gym.Env):
    """A hospital admitting patients one decision at a time.

    Each step is one decision about one patient: the next arrival (after a diagnostic
    turnaround calibrated on real data) or a deferred patient due for review. Time jumps to
    the next decision; beds free up, waiting patients deteriorate and surges start or end.

    **Action space** ``Discrete(5)``:

    | a | meaning |
    |---|---------|
    | 0 | admit to a general bed |
    | 1 | admit to an ICU bed (needs a working equipment unit) |
    | 2 | admit to a pediatric bed |
    | 3 | defer: keep waiting, review again after 2 h / 1 h / 0.5 h by severity |
    | 4 | transfer out (transport time, lower success, transfer cost) |

    An admission with no usable bed of that type or not enough budget for the stay becomes a
    deferral with the ``invalid`` penalty; deferring a new patient into a full queue becomes a
    transfer (also ``invalid``).

    **Observation** ``Box(0, 1, (26 + 6G,), float32)`` with G fairness groups:

    | slice | content |
    |-------|---------|
    | 0:3   | current patient's severity one-hot (routine, urgent, critical) |
    | 3     | acuity within severity (clinical risk, 0..1) |
    | 4:7   | age group one-hot (pediatric, adult, elderly) |
    | 7     | female |
    | 8:11  | insurance one-hot (private, public, uninsured) |
    | 11    | waiting time so far / 24 h (clipped) |
    | 12:12+3G | queue length per (severity x group) / queue capacity |
    | 12+3G:12+6G | mean wait per (severity x group) / 24 h (clipped) |
    | +0:3  | occupancy per bed type (general, icu, pediatric) / beds |
    | +3:6  | usable capacity per bed type / beds (surge, equipment) |
    | +6    | ICU equipment up / units |
    | +7    | staff on shift / headcount |
    | +8    | staff load (needed / on shift) / 2, clipped |
    | +9:11 | time of day (sin, cos) mapped to 0..1 |
    | +11   | budget left / budget |
    | +12   | surge active |
    | +13   | episode progress (decisions / max_decisions) |

    **Rewards** (weights in ``HospitalConfig.rewards``): ``success[sev]`` for a successful
    admission (``transfer_credit`` x that for a transfer that goes well), minus ``death`` per
    death (a failed critical admission or transfer, or a critical patient dying in the queue),
    minus ``deterioration`` per waiting patient whose severity rises, minus ``wait_per_hour``
    per severity-weighted (1/2/4) patient-hour in the queue, minus ``cost`` x operating cost
    (bed-hours x rate, transfers), minus ``invalid``.

    **Whose reward** (for group-robust objectives): every step's info splits the reward into
    ``reward_by_group`` (float vector, one entry per group) and ``reward_shared``, with
    ``reward == reward_shared + sum(reward_by_group)`` exactly. The decided patient's outcome
    (success or transfer credit, death) goes to that patient's group; each queued patient's
    waiting, deterioration and death penalties go to that patient's group (a decision about
    one patient changes the other groups' streams through the shared beds and queue); the
    operating cost and the invalid-action penalty are ``reward_shared``.

    **Info** every step: ``group`` (int group index of the patient this decision concerns),
    ``n_groups``, ``severity``, ``action`` (as carried out; -1 at reset), ``treated``, ``success``,
    ``transferred``, ``invalid``, ``wait`` (hours), ``occupancy`` and ``capacity`` (per bed
    type, after the decision), ``reward_by_group`` ((G,) float) and ``reward_shared``. At the last step also ``episode_metrics`` (see
    ``envs.hospital.metrics``). ``env.unwrapped.group_names`` maps index -> name.

    **Episode end**: truncated after ``max_decisions`` decisions (default 400); never
    terminated (a hospital does not end). Patients still waiting count as not treated.

    **Version history**: v0 (2026-11): first release.
    """

    metadata: ClassVar[dict] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: HospitalConfig | dict | str | Path | None = None,
        scenario: str | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        self.config = resolve_config(config, scenario, **overrides)  # raises before any state
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError("render_mode", f"got {render_mode!r}; allowed: ansi")
        self.render_mode = render_mode
        self.core = HospitalCore(self.config, 1)
        self.group_names = list(self.config.group_names)
        self.n_groups = len(self.group_names)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.core.obs_dim,), np.float32)
        self._last_info: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset_one(0, self.np_random)
        info = step_info(reset_output(self.core), 0, self.n_groups)
        return self.core.observe()[0], info

    def step(self, action):
        out = self.core.step(np.array([int(action)]))
        info = step_info(out, 0, self.n_groups)
        truncated = bool(out["truncated"][0])
        if truncated:
            info["episode_metrics"] = episode_metrics(self.core.episode_log(0))
        self._last_info = info
        return self.core.observe()[0], float(out["reward"][0]), False, truncated, info

    def episode_log(self) -> dict:
        """The current episode's log for :func:`envs.hospital.metrics.episode_metrics`."""
        return self.core.episode_log(0)

    def counts(self) -> dict[str, int]:
        """Patient counters (arrived, admitted, discharged, died, ...) and in-system from state."""
        return self.core.episode_log(0)["counts"]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        c = self.core
        occ = c.occ[0]
        return (
            f"t={c.t[0]:.1f}h decision={c.decisions[0]} beds(g/i/p)={occ.tolist()}/{c.beds.tolist()} "
            f"queue={(c.q_pid[0] >= 0).sum()} budget={c.budget_left[0]:.0f} surge={bool(c.surge[0])}"
        )
