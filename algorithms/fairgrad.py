"""FairGrad: conflict-projected gradients of a task loss and fairness objectives.

Paper: "FairGrad" for healthcare models, arXiv 2504.14388 — gradients of the task loss and of
one fairness loss per sensitive attribute are each projected onto the normal plane of any
other objective's gradient they conflict with (negative inner product), in random order, and
the projected gradients are summed (the PCGrad rule of Yu et al., 2020, applied to fairness).

This is NOT the 2023 "FairGrad: Fairness Aware Gradient Descent" reweighting method
(Maheshwari & Perrot, the ``fairgrad`` PyPI package), which reweights per-example losses
by group; nothing here reweights examples.

Pieces (pure functions first, then one thin stateful wrapper):

* :func:`project_conflicting` — the projection rule on flat gradient vectors.
* :func:`dp_gap_surrogate`, :func:`eo_gap_surrogate` — smooth fairness losses: the gaps of
  group means of sigmoid scores (the hard 0/1 decisions replaced by probabilities).
* :func:`fairgrad_losses_from_groups` — task + per-group objectives for RL learners
  (GRPO/PPO with ``fairgrad: true``) from a per-sample policy loss and group ids.
* :class:`FairGrad` — wraps any ``torch.optim.Optimizer``: ``FairGrad(opt, seed=0).step(losses)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FairGrad",
    "FairGradStats",
    "dp_gap_surrogate",
    "eo_gap_surrogate",
    "fairgrad_losses_from_groups",
    "flat_grads",
    "project_conflicting",
    "soft_range",
]


# ----------------------------------------------------------------------------- projection
def project_conflicting(
    grads: Sequence[torch.Tensor], rng: np.random.Generator | int | None = None
) -> list[torch.Tensor]:
    """PCGrad projection of each gradient against every other one it conflicts with.

    Args:
        grads: K flat gradients, each shape (P,) (same P, dtype, device).
        rng: numpy Generator (or seed) drawing the random order of the others for each i.

    Returns:
        K projected gradients, each shape (P,). For each i, walking the others j in a
        random order: if ``<g_i', g_j> < 0`` then ``g_i' -= <g_i', g_j> / |g_j|^2 * g_j``
        (``g_j`` is the ORIGINAL gradient, as in PCGrad). Gradients that conflict with no
        other are returned unchanged (same values). Zero gradients are never divided by.
    """
    if len(grads) == 0:
        return []
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    originals = [g.detach() for g in grads]
    sq_norms = [float(torch.dot(g, g)) for g in originals]
    out: list[torch.Tensor] = []
    for i, gi in enumerate(originals):
        proj = gi.clone()
        others = [j for j in range(len(originals)) if j != i]
        for j in rng.permutation(others) if others else []:
            j = int(j)
            dot = float(torch.dot(proj, originals[j]))
            if dot < 0 and sq_norms[j] > 0:
                proj.add_(originals[j], alpha=-dot / sq_norms[j])  # in place: no temporaries
        out.append(proj)
    return out


def flat_grads(
    loss: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = True
) -> torch.Tensor:
    """Gradient of scalar ``loss`` w.r.t. ``params`` flattened to shape (P,), P = sum numel.

    Parameters the loss does not depend on get zeros.
    """
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


# ----------------------------------------------------------------------------- surrogates
def soft_range(values: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """max - min of ``values`` (shape (G,)); ``tau > 0`` smooths both with log-sum-exp.

    The smoothed range over-estimates the true one by at most ``2 * tau * log(G)``.
    """
    if values.numel() < 2:
        return values.sum() * 0.0
    if tau <= 0:
        return values.max() - values.min()
    return tau * (torch.logsumexp(values / tau, 0) + torch.logsumexp(-values / tau, 0))


def _group_means(
    scores: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean score per present group, shape (G',) over groups with at least one member."""
    if mask is not None:
        scores, groups = scores[mask], groups[mask]
    if scores.numel() == 0:
        return scores.new_zeros(0)
    uniq, inverse = torch.unique(groups, return_inverse=True)
    sums = scores.new_zeros(len(uniq)).index_add(0, inverse, scores)
    counts = scores.new_zeros(len(uniq)).index_add(0, inverse, torch.ones_like(scores))
    return sums / counts


def dp_gap_surrogate(logits: torch.Tensor, groups: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """Smooth demographic-parity gap: range over groups of mean ``sigmoid(logits)``.

    Args:
        logits: shape (N,), classifier logits.
        groups: shape (N,), integer group codes (one sensitive attribute, or intersections).
    Returns:
        scalar tensor; the hard version (fairlearn's ``demographic_parity_difference``)
        replaces sigmoid scores by 0/1 decisions.
    """
    return soft_range(_group_means(torch.sigmoid(logits), groups), tau)


def eo_gap_surrogate(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, tau: float = 0.0
) -> torch.Tensor:
    """Smooth equalized-odds gap: TPR-gap + FPR-gap surrogates of ``sigmoid(logits)``.

    Args:
        logits: shape (N,); labels: shape (N,) in {0, 1}; groups: shape (N,) integer codes.
    Returns:
        scalar: ``range_g mean(s | y=1, g) + range_g mean(s | y=0, g)``. The sum (not the max
        fairlearn's ``equalized_odds_difference`` takes) upper-bounds that max and gives
        both rates a gradient at every step.
    """
    s = torch.sigmoid(logits)
    pos = labels > 0.5
    return soft_range(_group_means(s, groups, pos), tau) + soft_range(
        _group_means(s, groups, ~pos), tau
    )


def fairgrad_losses_from_groups(
    per_sample_loss: torch.Tensor, group_ids: torch.Tensor | np.ndarray | Sequence
) -> list[torch.Tensor]:
    """Objectives for RL learners with ``fairgrad: true``: task loss + one per group.

    Args:
        per_sample_loss: shape (N,), e.g. the per-sequence (token-averaged) policy loss.
        group_ids: shape (N,), a hashable group key per sample (ints or strings).
    Returns:
        ``[task, f_1, ..., f_G]`` where ``task = per_sample_loss.mean()`` and, for each group
        g in sorted key order, ``f_g = 0.5 * (L_g - Lbar)^2`` with ``L_g`` the group's mean
        loss and ``Lbar`` the unweighted mean of the ``L_g``. Descending ``f_g`` pulls the
        worst group's loss down and the best group's up; FairGrad projection removes the
        part of that pull which conflicts with the task gradient. With a single group,
        only ``[task]``.
    """
    keys = np.asarray(
        group_ids.detach().cpu().numpy() if isinstance(group_ids, torch.Tensor) else group_ids
    )
    if keys.shape[0] != per_sample_loss.shape[0]:
        raise ValueError(
            f"group_ids has {keys.shape[0]} entries, per_sample_loss {per_sample_loss.shape[0]}"
        )
    task = per_sample_loss.mean()
    uniq, inverse = np.unique(keys, return_inverse=True)
    if len(uniq) < 2:
        return [task]
    idx = torch.as_tensor(inverse.reshape(-1), device=per_sample_loss.device)
    group_losses = _group_means(per_sample_loss, idx)
    mean = group_losses.mean()
    return [task] + [0.5 * (group_losses[g] - mean) ** 2 for g in range(len(uniq))]


# ----------------------------------------------------------------------------- wrapper
@dataclass
class FairGradStats:
    """What one FairGrad step did (for logging under ``fairgrad/...``)."""

    conflicts: int
    """number of ordered pairs (i, j) with <g_i, g_j> < 0 before projection"""
    min_cosine: float
    """smallest pairwise cosine between the raw gradients"""
    grad_norm: float
    """norm of the summed, projected gradient written to ``.grad``"""


class FairGrad:
    """Wrap a torch optimizer: per-objective gradients -> projection -> sum -> ``step()``.

    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)      # doctest: +SKIP
    >>> fg = FairGrad(opt, seed=0)                                  # doctest: +SKIP
    >>> fg.step([task_loss, eo_gap_surrogate(logits, y, race)])    # doctest: +SKIP

    ``backward(losses)`` only writes ``.grad`` (for callers that step themselves, e.g. with
    gradient clipping in between); ``step(losses)`` does ``backward`` then ``optimizer.step()``.
    ``weights`` (default all 1) scales each objective before the gradients are taken.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        seed: int | None = 0,
        weights: Sequence[float] | None = None,
    ):
        self.optimizer = optimizer
        self.rng = np.random.default_rng(seed)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.params = [
            p for group in optimizer.param_groups for p in group["params"] if p.requires_grad
        ]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, losses: Sequence[torch.Tensor]) -> FairGradStats:
        """Write the summed projected gradient of ``losses`` (K scalars) into ``.grad``."""
        if len(losses) == 0:
            raise ValueError("FairGrad needs at least one loss")
        if self.weights is not None and len(self.weights) != len(losses):
            raise ValueError(f"{len(self.weights)} weights for {len(losses)} losses")
        weights = self.weights or [1.0] * len(losses)
        grads = [
            flat_grads(w * loss, self.params, retain_graph=k < len(losses) - 1)
            for k, (w, loss) in enumerate(zip(weights, losses))
        ]
        stats = _pair_stats(grads)
        projected = project_conflicting(grads, self.rng)  # fresh tensors: safe to add into
        total = projected[0]
        for g in projected[1:]:
            total.add_(g)
        offset = 0
        for p in self.params:  # non-overlapping views of one flat buffer
            n = p.numel()
            p.grad = total[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        return FairGradStats(stats[0], stats[1], float(total.norm()))

    def step(self, losses: Sequence[torch.Tensor]) -> FairGradStats:
        """``zero_grad`` + :meth:`backward` + ``optimizer.step()``."""
        self.zero_grad()
        stats = self.backward(losses)
        self.optimizer.step()
        return stats


def _pair_stats(grads: Sequence[torch.Tensor]) -> tuple[int, float]:
    """(conflicting ordered pairs, minimum pairwise cosine) of K flat gradients."""
    if len(grads) < 2:
        return 0, 1.0
    g = torch.stack([x.detach() for x in grads])
    gram = g @ g.T
    norms = gram.diagonal().clamp_min(1e-30).sqrt()
    cos = gram / (norms[:, None] * norms[None, :])
    off = ~torch.eye(len(grads), dtype=torch.bool)
    return int((gram[off] < 0).sum()), float(cos[off].min())
