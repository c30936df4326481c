"""Group-robust PPO objective: the math, as pure torch functions.

Reference: the EquiRL hospital-allocation report (group-robust PPO for fair resource
allocation) and, for the ``worst_group`` mode, GroupDRO (Sagawa et al., 2020,
arXiv 1911.08731).

Objective, per learner minibatch::

    L = (1 - λ) · L_PPO + λ · L_robust

* ``L_PPO`` is PPO's own loss (clipped surrogate + value loss - entropy + KL).
* ``J_g`` is the per-group clipped surrogate objective (:func:`group_objectives` of
  :func:`clipped_surrogate`): the mean over the group's valid timesteps of
  ``min(A·ρ, A·clip(ρ, 1-ε, 1+ε))`` (what PPO maximises, per group).
* ``robust_mode="gap"``: ``L_robust = max_g J_g - min_g J_g`` (the report's
  best-minus-worst-group gap).
* ``robust_mode="worst_group"``: ``L_robust = mean_g J_g - min_g J_g``, the worst group's
  shortfall (max-min in the GroupDRO style, written as an excess so that one group gives
  0 and λ=0 gives PPO exactly).

With one group both modes give ``L_robust = 0``; with λ = 0 the loss (and every gradient)
is PPO's bit for bit. Keep λ ≤ 0.5 to keep a positive weight on the mean objective.

The RLlib learner that applies this objective (and the connector that brings group ids
into the batch) is :mod:`platform.allocation.rllib`.
"""

from __future__ import annotations

import torch

ROBUST_MODES = ("gap", "worst_group")


def group_objectives(
    surrogate: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of ``surrogate`` per group.

    Args:
        surrogate: (T,) float, per-timestep objective (higher is better).
        groups: (T,) int64, group id per timestep (>= 0).
        mask: (T,) bool, valid timesteps (None: all valid).
    Returns:
        ``(ids, means, counts)``: (K,) int64 ids of the groups present, (K,) float
        means (differentiable w.r.t. ``surrogate``), (K,) int64 timestep counts.
    """
    if mask is not None:
        surrogate, groups = surrogate[mask], groups[mask]
    groups = groups.long()
    if groups.numel() == 0:
        empty = surrogate.new_zeros(0)
        return groups.new_zeros(0), empty, groups.new_zeros(0)
    size = int(groups.max().item()) + 1
    sums = surrogate.new_zeros(size).index_add(0, groups, surrogate)
    counts = torch.bincount(groups, minlength=size)
    present = counts > 0
    ids = torch.nonzero(present, as_tuple=False).flatten()
    return ids, sums[present] / counts[present].to(surrogate.dtype), counts[present]


def robust_term(objectives: torch.Tensor, mode: str) -> torch.Tensor:
    """``L_robust`` from per-group objectives.

    Args:
        objectives: (K,) per-group objectives ``J_g`` (K >= 0).
        mode: ``"gap"`` -> ``max J - min J``; ``"worst_group"`` -> ``mean J - min J``.
    Returns:
        scalar tensor; 0 when K <= 1.
    """
    if mode not in ROBUST_MODES:
        raise ValueError(f"robust_mode: got {mode!r}; allowed: {', '.join(ROBUST_MODES)}")
    if objectives.numel() <= 1:
        return objectives.sum() * 0.0
    worst = objectives.min()
    if mode == "gap":
        return objectives.max() - worst
    return objectives.mean() - worst


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's per-timestep clipped surrogate ``min(A·ρ, A·clip(ρ, 1-ε, 1+ε))``.

    ``ρ = exp(logp - old_logp)`` is the probability ratio of the current and behaviour policies.

    Args:
        logp: (T,) log-probability of the taken actions under the current policy.
        old_logp: (T,) log-probability under the behaviour policy (no gradient needed).
        advantages: (T,) advantage estimates ``A``.
        clip: ``ε`` > 0.
    Returns:
        (T,) per-timestep objective (higher is better).
    """
    ratio = torch.exp(logp - old_logp)
    return torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))
