"""Policy-gradient losses on token log-probs (pure torch; no Ray, no DeepSpeed, no I/O).

``ppo_token_loss``: PPO-clip (Schulman et al. 2017, arXiv 1707.06347) as GRPO uses it (Shao et
al. 2024, arXiv 2402.03300), with an optional KL penalty to a frozen reference by Schulman's
k3 estimator. Per completion i over its tokens t::

    ratio_t = exp(logp_t - old_logp_t)
    l_i     = mean_t max(-A_i ratio_t, -A_i clip(ratio_t, 1-eps, 1+eps)) + kl_coef * mean_t k3_t
    k3_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1

The clinical learners (``platform.clinical.learner``) weight and sum ``l_i`` over the batch.
"""

from __future__ import annotations

from typing import Any


def ppo_token_loss(logp: Any, old_logp: Any, ref_logp: Any | None, advantages: Any, mask: Any,
                   clip_eps: float, kl_coef: float) -> tuple[Any, dict[str, float]]:
    """Per-sequence PPO-clip (+ k3 KL) loss.

    Args:
        logp: log-probs of the sampled tokens under the current policy, shape (B, T) (grad).
        old_logp: the same under the policy that sampled them, shape (B, T).
        ref_logp: the same under the reference model, shape (B, T), or None (no KL).
        advantages: one advantage per sequence, shape (B,).
        mask: 1.0 for completion tokens, 0.0 for prompt / padding, shape (B, T).
        clip_eps: PPO clip range epsilon.
        kl_coef: weight of the k3 KL term (0 = none).

    Returns:
        ``(loss_per_seq, stats)``: ``loss_per_seq`` shape (B,), the masked token mean of each
        sequence (0 for a sequence without tokens); ``stats`` scalar sums over all masked
        tokens: ``clipfrac`` (tokens where the clipped term is active), ``kl``, ``ratio``,
        ``tokens``.
    """
    import torch

    adv = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_tok = torch.maximum(unclipped, clipped)
    kl = torch.zeros_like(per_tok)
    if ref_logp is not None and kl_coef > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        per_tok = per_tok + kl_coef * kl
    denom = mask.sum(-1).clamp(min=1)
    loss = (per_tok * mask).sum(-1) / denom
    with torch.no_grad():
        m = mask.bool()
        stats = {
            "clipfrac": ((clipped > unclipped) & m).float().sum().item(),
            "kl": (kl * mask).sum().item(),
            "ratio": (ratio * mask).sum().item(),
            "tokens": mask.sum().item(),
        }
    return loss, stats
