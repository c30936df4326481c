"""Group-robust objectives over per-group outcome streams (vector-reward PPO).

A decision about one patient changes every group's outcomes (a bed given to one patient is not
there for the next), so each group g has its own reward stream r_g(t) (the hospital envs'
``info["reward_by_group"]``), its own value head V_g and its own advantage A_g(t) at *every*
timestep, not only at the timesteps that decided about a member of g.

* :func:`group_gae`: GAE (Schulman et al. 2016, arXiv 1506.02438) on each stream at once.
* :func:`per_capita_objectives`: J_g = expected discounted sum of g's stream divided by g's
  share of arrivals, so that a majority group does not look better just by being larger.
* :data:`ROBUST_OBJECTIVES`: how the per-group advantages combine into A_robust; the policy
  is trained on A_mix = (1 - λ)·A + λ·A_robust (each standardized):

  - ``worst_group`` -- online GroupDRO (Sagawa et al. 2020, arXiv 1911.08731, Algorithm 1):
    q_g ∝ q_g · exp(η · loss_g) with loss_g = (max_h J_h - J_g) / (max_h J_h - min_h J_h)
    in [0, 1] (0 for the best-off group, 1 for the worst-off); A_robust = Σ_g q_g A_g.
  - ``ggf`` -- generalized Gini social welfare (Siddique, Weng & Zimmer, ICML 2020, "Learning
    Fair Policies in Multiobjective (Deep) Reinforcement Learning with Average and Discounted
    Rewards"): strictly decreasing weights w_1 > w_2 > ... over the groups sorted from worst to
    best J (default w_i = 2^-(i-1), normalized); A_robust = Σ_i w_i A_(i).
  - ``gap`` -- the EquiRL report's best-minus-worst gap: A_robust = A_worst - A_best, worst and
    best by J. Minimising the gap also *lowers the best-off group*: prefer ``worst_group`` or
    ``ggf`` unless that is intended.

  With one group every mode gives A_robust = A (nothing to be robust over).

Each objective is a weight vector over groups, so A_robust = A_groups @ w for all of them.
Pure numpy (and torch for :func:`clipped_surrogate`); no Ray, no I/O. The RLlib learner that
trains on this (value heads per group, the connector that reads the streams) is
:mod:`platform.allocation.rllib`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from base.errors import require
from base.registry import Registry


# ------------------------------------------------------------------------------ GAE
def group_gae(rewards: np.ndarray, values: np.ndarray, bootstrap: np.ndarray,
              gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE on G reward streams of one episode fragment.

    Args:
        rewards: (T, G) reward of each group's stream at step t.
        values: (T, G) V_g(s_t).
        bootstrap: (G,) V_g of the state after the last step (0 if the episode terminated).
        gamma, lam: discount and GAE λ.
    Returns:
        ``(advantages, value_targets)``, both (T, G); value_targets = advantages + values.
    """
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    T = rewards.shape[0]
    next_values = np.concatenate([values[1:], np.asarray(bootstrap, np.float64)[None]], 0)
    delta = rewards + gamma * next_values - values
    adv = np.empty_like(delta)
    running = np.zeros(delta.shape[1:])
    for t in range(T - 1, -1, -1):
        running = delta[t] + gamma * lam * running
        adv[t] = running
    return adv, adv + values


# ----------------------------------------------------------------- per-capita objectives
def per_capita_objectives(value_targets: np.ndarray, groups: np.ndarray, n_groups: int,
                          mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batch estimate of J_g (per capita) and of each group's share of decisions.

    Args:
        value_targets: (N, G) GAE value targets of each stream (an estimate of the
            discounted sum of g's stream from s_t) at the batch's N timesteps.
        groups: (N,) int, the group the decision at t concerned (its share of decisions
            estimates its share of arrivals).
        n_groups: G.
        mask: (N,) bool, valid timesteps (None: all).
    Returns:
        ``(J, share)``: (G,) J_g = mean_t V^targ_g(t) / share_g, and (G,) share_g. A group
        with no decision in the batch gets share 0 and J = nan (left out of the ranking).
    """
    vt = np.asarray(value_targets, np.float64)
    g = np.asarray(groups, np.int64)
    if mask is not None:
        vt, g = vt[np.asarray(mask, bool)], g[np.asarray(mask, bool)]
    share = np.bincount(g, minlength=n_groups)[:n_groups] / max(len(g), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(share > 0, vt.mean(0) / share, np.nan) if len(vt) else np.full(n_groups, np.nan)
    return j, share


def _ranked(j: np.ndarray) -> np.ndarray:
    """Indices of the groups with a defined J, from worst (lowest J) to best."""
    defined = np.flatnonzero(np.isfinite(j))
    return defined[np.argsort(j[defined], kind="stable")]


# ------------------------------------------------------------------- robust objectives
@dataclass
class RobustState:
    """What an objective carries across iterations (GroupDRO's q); checkpointed with the learner."""

    q: np.ndarray | None = None
    iterations: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"q": None if self.q is None else self.q.tolist(), "iterations": self.iterations}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.q = None if d.get("q") is None else np.asarray(d["q"], np.float64)
        self.iterations = int(d.get("iterations", 0))


@dataclass
class RobustObjective:
    """Base: ``weights(J, state) -> (G,)`` so that A_robust = A_groups @ weights."""

    name: str = ""
    params: dict[str, float] = field(default_factory=dict)

    def weights(self, j: np.ndarray, state: RobustState) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


ROBUST_OBJECTIVES: Registry = Registry("robust objective")


@ROBUST_OBJECTIVES.register("worst_group")
@dataclass
class GroupDRO(RobustObjective):
    """Online GroupDRO weights q (Sagawa et al. 2020): q_g ∝ q_g·exp(η·loss_g), loss in [0, 1]."""

    eta: float = 0.5

    def __post_init__(self) -> None:
        require(self.eta > 0, "robust_eta", f"{self.eta} must be > 0 (GroupDRO step size)")

    def weights(self, j: np.ndarray, state: RobustState) -> np.ndarray:
        G = len(j)
        if state.q is None or len(state.q) != G:
            state.q = np.full(G, 1.0 / G)
        ok = np.isfinite(j)
        if ok.sum() >= 2:
            lo, hi = j[ok].min(), j[ok].max()
            loss = np.where(ok, (hi - j) / max(hi - lo, 1e-12), 0.0)
            q = state.q * np.exp(self.eta * loss)
            state.q = q / q.sum()
        state.iterations += 1
        return state.q.copy()


@ROBUST_OBJECTIVES.register("ggf")
@dataclass
class GeneralizedGini(RobustObjective):
    """Generalized Gini welfare: w_i = base^-(i-1) over groups sorted worst -> best, normalized."""

    base: float = 2.0

    def __post_init__(self) -> None:
        require(self.base > 1, "robust_ggf_base",
                f"{self.base} must be > 1 (weights must strictly decrease from worst to best)")

    def weights(self, j: np.ndarray, state: RobustState) -> np.ndarray:
        order = _ranked(j)
        w = np.zeros(len(j))
        if order.size:
            ranks = self.base ** -np.arange(order.size, dtype=np.float64)
            w[order] = ranks / ranks.sum()
        state.iterations += 1
        return w


@ROBUST_OBJECTIVES.register("gap")
@dataclass
class WorstMinusBest(RobustObjective):
    """The report's gap: +1 on the worst group's advantage, -1 on the best group's (lowers the best)."""

    def weights(self, j: np.ndarray, state: RobustState) -> np.ndarray:
        order = _ranked(j)
        w = np.zeros(len(j))
        if order.size >= 2:
            w[order[0]], w[order[-1]] = 1.0, -1.0
        state.iterations += 1
        return w


def get_objective(name: str, **params: float) -> RobustObjective:
    """The objective registered as ``name``, built with its keyword parameters."""
    cls = ROBUST_OBJECTIVES.get(name)
    return cls(name=name, **params)


def robust_advantages(group_adv: np.ndarray, total_adv: np.ndarray, weights: np.ndarray
                      ) -> np.ndarray:
    """A_robust (N,) = group_adv (N, G) @ weights (G,); with one group, the total A (N,)."""
    group_adv = np.asarray(group_adv, np.float64)
    if group_adv.shape[1] <= 1:
        return np.asarray(total_adv, np.float64).copy()
    return group_adv @ np.asarray(weights, np.float64)


def clipped_surrogate(logp, old_logp, advantages, clip: float):
    """PPO's per-timestep clipped surrogate ``min(A·ρ, A·clip(ρ, 1-ε, 1+ε))``; torch, all (T,)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    return torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))


def standardize(x: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-4) -> np.ndarray:
    """(x - mean) / max(std, eps) over the valid entries (RLlib normalizes A this way)."""
    x = np.asarray(x, np.float64)
    v = x if mask is None else x[np.asarray(mask, bool)]
    if v.size == 0:
        return x.copy()
    return (x - v.mean()) / max(float(v.std()), eps)


def mix_advantages(total_std: np.ndarray, robust: np.ndarray, lam: float,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """A_mix = (1 - λ)·A + λ·standardize(A_robust); λ = 0 returns A unchanged (bit for bit)."""
    require(0.0 <= lam <= 1.0, "robust_lambda", f"{lam} must be in [0, 1]")
    if lam == 0.0:
        return total_std
    return (1.0 - lam) * total_std + lam * standardize(robust, mask)
