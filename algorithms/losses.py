"""Policy-gradient losses on token log-probs (pure torch; no Ray, no DeepSpeed, no I/O).

Shapes: B completions, T token positions; ``mask`` (B, T) is 1.0 on completion tokens.

PPO-clip (Schulman et al. 2017, arXiv 1707.06347) as GRPO uses it (Shao et al. 2024, arXiv
2402.03300), per token with ratio_t = exp(logp_t - old_logp_t) (clamped to log-ratio
[-20, 20], verl ``compute_policy_loss_vanilla``)::

    pg_t = max(-A ratio_t, -A clip(ratio_t, 1 - eps_low, 1 + eps_high))
    dual clip (A < 0, c > 1):  pg_t = min(pg_t, -A c)              (arXiv 1912.09729)
    k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                (KL to a reference)
    l_t  = pg_t * w_t + kl_coef * k3_t

- eps_low < eps_high is DAPO's clip-higher (Yu et al., arXiv 2503.14476; verl
  ``clip_ratio_low/high``, TRL ``epsilon``/``epsilon_high``).
- GSPO (Zheng et al., arXiv 2507.18071; verl ``compute_policy_loss_gspo``, TRL
  ``importance_sampling_level="sequence"``): one ratio per sequence,
  s_i = exp(mean_t (logp - old_logp)); its token form exp(logp - sg(logp) + sg(log s_i)) has
  the value s_i and the gradient of s_i, clipped at the sequence level.
- TIS, truncated importance sampling for the rollout/learner mismatch (Yao et al., "Your
  efficient RL framework secretly brings you off-policy RL training", 2025; verl
  ``tis_imp_ratio_cap``, TRL ``vllm_importance_sampling_mode="token_truncate"``):
  w_t = min(exp(old_logp_t - rollout_logp_t), cap) multiplies pg_t (not the KL term).

- SFT (``policy_loss="sft"``, the supervised warm start of ``platform.train sft``):
  l_t = -logp_t, the negative log-likelihood of the target tokens (advantages, ratios and
  clipping unused; the learner scores them at temperature 1), aggregated like the others
  (``token-mean``: the cross-entropy of TRL's ``SFTTrainer`` over completion tokens).

Aggregation over the *global* batch (verl ``core_algos.agg_loss``), n_seq sequences with at
least one token and n_tok tokens in all ranks' micro-batches together::

    token-mean               sum_i sum_t l_it / n_tok                          (verl default)
    seq-mean-token-mean      sum_i (sum_t l_it / |y_i|) / n_seq                 (GSPO; earlier here)
    seq-mean-token-sum       sum_i sum_t l_it / n_seq
    seq-mean-token-sum-norm  sum_i sum_t l_it / (n_seq * norm_len)              (Dr. GRPO)

``norm_len`` is a constant, the generation cap: TRL ``loss_type="dr_grpo"`` divides by
batch size x ``max_completion_length``; verl divides the micro-batch sum by the padded length
(``loss_scale_factor``), which its own comment says should be constant. :func:`sample_losses`
returns each sequence's share of that global value, so micro-batches on several ranks sum to
exactly the full-batch loss (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
POLICY_LOSSES = ("ppo", "gspo", "sft")


@dataclass(frozen=True)
class LossSpec:
    """Everything the learner's loss needs (plain values; travels to the learner actors)."""

    policy_loss: str = "ppo"
    """"ppo": token-level ratio and clipping; "gspo": sequence-level (GSPO); "sft": the
    negative log-likelihood of the completion tokens (supervised)."""
    agg: str = "token-mean"
    """one of LOSS_AGG_MODES"""
    clip_low: float = 0.2
    """eps_low: ratios below 1 - eps_low are clipped"""
    clip_high: float = 0.2
    """eps_high: ratios above 1 + eps_high are clipped (DAPO: 0.28)"""
    dual_clip_c: float = 0.0
    """dual-clip bound c > 1 for negative advantages; 0 = off (verl's default is 3)"""
    kl_coef: float = 0.0
    """weight of the k3 KL term (needs ref_logp)"""
    tis_cap: float = 0.0
    """truncated importance sampling cap; 0 = off (needs rollout_logp)"""
    norm_len: int = 1
    """the constant of seq-mean-token-sum-norm (the generation cap)"""

    def __post_init__(self) -> None:
        if self.policy_loss not in POLICY_LOSSES:
            raise ValueError(f"policy_loss: got {self.policy_loss!r}; allowed: {', '.join(POLICY_LOSSES)}")
        if self.agg not in LOSS_AGG_MODES:
            raise ValueError(f"agg: got {self.agg!r}; allowed: {', '.join(LOSS_AGG_MODES)}")


def policy_token_loss(logp: Any, old_logp: Any, advantages: Any, mask: Any, spec: LossSpec,
                      ref_logp: Any | None = None, rollout_logp: Any | None = None
                      ) -> tuple[Any, dict[str, float]]:
    """Per-token loss l (B, T) (0 off the mask) and summed stats over masked tokens.

    Args:
        logp: log-probs of the sampled tokens under the current policy, (B, T) (grad).
        old_logp: the same under the policy the update starts from, (B, T).
        advantages: one advantage per sequence, (B,).
        mask: 1.0 for completion tokens, 0.0 for prompt / padding, (B, T).
        spec: the :class:`LossSpec`.
        ref_logp: reference-model log-probs (B, T) for the KL term, or None.
        rollout_logp: log-probs the rollout engine sampled with (B, T), or None: needed for
            TIS; when given the stats hold the mismatch |old_logp - rollout_logp|.

    Stats: ``clipfrac`` (tokens where clipping is active), ``kl``, ``ratio``, ``tokens``, and
    with ``rollout_logp`` ``logprob_diff`` (sum), ``logprob_diff_max``, ``tis_weight`` (sum of
    w_t), ``tis_clipped`` (tokens with w_t truncated at the cap).
    """
    import torch

    if spec.policy_loss == "sft":
        nll = -logp * mask
        with torch.no_grad():
            stats = {"clipfrac": 0.0, "kl": 0.0, "ratio": mask.sum().item(), "tokens": mask.sum().item()}
        return nll, stats
    adv = advantages[:, None]
    if spec.policy_loss == "gspo":
        seq = ((logp - old_logp) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        log_ratio = torch.clamp(logp - logp.detach() + seq.detach()[:, None], max=10.0)
    else:
        log_ratio = torch.clamp(logp - old_logp, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - spec.clip_low, 1.0 + spec.clip_high)
    pg = torch.maximum(unclipped, clipped)
    if spec.dual_clip_c > 0:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * spec.dual_clip_c), pg)
    stats: dict[str, float] = {}
    if rollout_logp is not None:
        with torch.no_grad():
            diff = (old_logp - rollout_logp).abs() * mask
            stats["logprob_diff"] = diff.sum().item()
            stats["logprob_diff_max"] = diff.max().item() if diff.numel() else 0.0
        if spec.tis_cap > 0:
            w = torch.clamp(torch.exp(old_logp - rollout_logp).detach(), max=spec.tis_cap)
            pg = pg * w
            with torch.no_grad():
                stats["tis_weight"] = (w * mask).sum().item()
                stats["tis_clipped"] = ((w >= spec.tis_cap) & mask.bool()).float().sum().item()
    kl = torch.zeros_like(pg)
    if ref_logp is not None and spec.kl_coef > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        pg = pg + spec.kl_coef * kl
    with torch.no_grad():
        m = mask.bool()
        stats.update({"clipfrac": ((clipped > unclipped) & m).float().sum().item(),
                      "kl": (kl * mask).sum().item(), "ratio": (ratio * mask).sum().item(),
                      "tokens": mask.sum().item()})
    return pg * mask, stats


def sample_losses(per_token: Any, mask: Any, agg: str, n_seqs: float, n_tokens: float,
                  norm_len: int = 1) -> Any:
    """(B,) each sequence's share of the global aggregated loss (module docstring); their sum
    over every micro-batch of every rank is verl's ``agg_loss`` of the whole batch.

    per_token, mask: (B, T); n_seqs / n_tokens: sequences with >= 1 token / tokens in the
    global batch; norm_len: the constant of ``seq-mean-token-sum-norm``.
    """
    tok_sum = (per_token * mask).sum(-1)
    if agg == "token-mean":
        return tok_sum / max(n_tokens, 1.0)
    if agg == "seq-mean-token-mean":
        return tok_sum / mask.sum(-1).clamp(min=1) / max(n_seqs, 1.0)
    if agg == "seq-mean-token-sum":
        return tok_sum / max(n_seqs, 1.0)
    if agg == "seq-mean-token-sum-norm":
        return tok_sum / (max(n_seqs, 1.0) * norm_len)
    raise ValueError(f"agg: got {agg!r}; allowed: {', '.join(LOSS_AGG_MODES)}")


def ppo_token_loss(logp: Any, old_logp: Any, ref_logp: Any | None, advantages: Any, mask: Any,
                   clip_eps: float, kl_coef: float) -> tuple[Any, dict[str, float]]:
    """Per-sequence PPO-clip (+ k3 KL) loss: the masked token mean of each sequence, (B,)
    (0 for a sequence without tokens), i.e. ``seq-mean-token-mean`` before the batch mean.
    Stats as :func:`policy_token_loss`."""
    spec = LossSpec(clip_low=clip_eps, clip_high=clip_eps, kl_coef=kl_coef)
    per_tok, stats = policy_token_loss(logp, old_logp, advantages, mask, spec, ref_logp=ref_logp)
    return per_tok.sum(-1) / mask.sum(-1).clamp(min=1), stats
