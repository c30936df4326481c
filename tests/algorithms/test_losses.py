"""``algorithms.losses``: the vectorized losses and aggregation against slow, obvious loops;
clip-higher, GSPO and TIS on known cases; micro-batches on ranks sum to the whole batch."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.losses import (
    LOSS_AGG_MODES,
    LossSpec,
    policy_token_loss,
    ppo_token_loss,
    sample_losses,
)

torch = pytest.importorskip("torch")


def _loop_loss(logp, old, ref, adv, mask, eps, beta):
    out = []
    for i in range(logp.shape[0]):
        terms = []
        for t in range(logp.shape[1]):
            if mask[i, t] == 0:
                continue
            r = float(np.exp(logp[i, t] - old[i, t]))
            a = float(adv[i])
            term = max(-a * r, -a * min(max(r, 1 - eps), 1 + eps))
            if ref is not None and beta > 0:
                d = float(ref[i, t] - logp[i, t])
                term += beta * (np.exp(d) - d - 1)
            terms.append(term)
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_ppo_token_loss_matches_loop(beta):
    g = torch.Generator().manual_seed(0)
    B, T = 5, 7
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.4 * torch.randn(B, T, generator=g)
    ref = logp + 0.2 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    loss, stats = ppo_token_loss(logp, old, ref, adv, mask, 0.2, beta)
    want = _loop_loss(logp.numpy(), old.numpy(), ref.numpy(), adv.numpy(), mask.numpy(), 0.2, beta)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5, atol=1e-6)
    assert stats["tokens"] == mask.sum().item() and stats["clipfrac"] > 0


def test_ppo_gradient_at_ratio_one_is_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = ppo_token_loss(logp, logp.detach(), None, torch.tensor([2.0]), torch.ones(1, 2), 0.2, 0.0)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0]]))  # -A / T per token


# ------------------------------------------------------------------------------------------
# policy_token_loss + sample_losses (aggregation, clip-higher, dual clip, GSPO, TIS)


def _loop_policy(logp, old, adv, mask, spec, rollout=None):
    """Per-token l (B, T) from the definitions in algorithms/losses.py, one token at a time."""
    B, T = logp.shape
    out = np.zeros((B, T))
    for i in range(B):
        toks = [t for t in range(T) if mask[i, t]]
        if spec.policy_loss == "gspo" and toks:
            s_i = float(np.exp(np.mean([logp[i, t] - old[i, t] for t in toks])))
        for t in toks:
            r = s_i if spec.policy_loss == "gspo" else float(np.exp(logp[i, t] - old[i, t]))
            a = float(adv[i])
            term = max(-a * r, -a * min(max(r, 1 - spec.clip_low), 1 + spec.clip_high))
            if spec.dual_clip_c > 0 and a < 0:
                term = min(term, -a * spec.dual_clip_c)
            if rollout is not None and spec.tis_cap > 0:
                term *= min(float(np.exp(old[i, t] - rollout[i, t])), spec.tis_cap)
            out[i, t] = term
    return out


def _loop_agg(per_tok, mask, agg, norm_len):
    seqs = [i for i in range(mask.shape[0]) if mask[i].sum() > 0]
    n_tok = mask.sum()
    sums = [float((per_tok[i] * mask[i]).sum()) for i in seqs]
    if agg == "token-mean":
        return sum(sums) / n_tok
    if agg == "seq-mean-token-mean":
        return float(np.mean([s / mask[i].sum() for s, i in zip(sums, seqs)]))
    if agg == "seq-mean-token-sum":
        return float(np.mean(sums))
    return float(np.mean(sums)) / norm_len


def _random(seed, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    rollout = old + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    mask[0] = 0.0  # a completion without tokens
    return logp, old, rollout, adv, mask


@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
@pytest.mark.parametrize("kind", ["ppo", "clip-higher+dual", "gspo", "tis"])
def test_policy_loss_and_aggregation_match_loops(agg, kind):
    logp, old, rollout, adv, mask = _random(1)
    spec = {"ppo": LossSpec(agg=agg), "clip-higher+dual": LossSpec(agg=agg, clip_low=0.1, clip_high=0.28,
                                                                     dual_clip_c=1.5),
            "gspo": LossSpec(agg=agg, policy_loss="gspo", clip_low=0.05, clip_high=0.1),
            "tis": LossSpec(agg=agg, tis_cap=1.5)}[kind]
    per_tok, stats = policy_token_loss(logp, old, adv, mask, spec, rollout_logp=rollout)
    want = _loop_policy(*(x.numpy() for x in (logp, old, adv, mask)), spec, rollout.numpy())
    np.testing.assert_allclose(per_tok.numpy(), want, rtol=1e-10, atol=1e-12)
    n_seq, n_tok = float((mask.sum(-1) > 0).sum()), float(mask.sum())
    total = sample_losses(per_tok, mask, agg, n_seq, n_tok, norm_len=7).sum().item()
    assert total == pytest.approx(_loop_agg(want, mask.numpy(), agg, 7), rel=1e-10)
    diff = ((old - rollout).abs() * mask)
    assert stats["logprob_diff"] == pytest.approx(diff.sum().item())
    assert stats["logprob_diff_max"] == pytest.approx(diff.max().item())


@pytest.mark.parametrize("agg", LOSS_AGG_MODES)
def test_micro_batches_on_ranks_sum_to_the_full_batch_loss_and_gradient(agg):
    """The learner splits the batch over ranks x micro-batches and sums sample_losses with the
    global counts: loss and gradient equal the whole batch's aggregate."""
    logp, old, _, adv, mask = _random(2, B=8)
    n_seq, n_tok = float((mask.sum(-1) > 0).sum()), float(mask.sum())
    full = logp.clone().requires_grad_(True)
    per_tok, _ = policy_token_loss(full, old, adv, mask, LossSpec(agg=agg))
    want = sample_losses(per_tok, mask, agg, n_seq, n_tok, 7).sum()
    want.backward()
    leaf = logp.clone().requires_grad_(True)
    got = 0.0
    for part in ([0, 3], [1, 5, 6], [2], [4, 7]):
        p = torch.tensor(part)
        pt, _ = policy_token_loss(leaf[p], old[p], adv[p], mask[p], LossSpec(agg=agg))
        got = got + sample_losses(pt, mask[p], agg, n_seq, n_tok, 7).sum()
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(leaf.grad, full.grad)


def test_aggregation_known_answers():
    """Sequence A: 1 token of loss 2; B: 3 tokens of loss 0. token-mean 2/4; seq-mean-token-mean
    (2 + 0)/2; seq-mean-token-sum (2 + 0)/2; seq-mean-token-sum-norm with norm_len 4: 2/(2 x 4)."""
    per_tok = torch.tensor([[2.0, 0, 0], [0.0, 0, 0]])
    mask = torch.tensor([[1.0, 0, 0], [1.0, 1, 1]])
    want = {"token-mean": 0.5, "seq-mean-token-mean": 1.0, "seq-mean-token-sum": 1.0,
            "seq-mean-token-sum-norm": 0.25}
    for agg, v in want.items():
        assert sample_losses(per_tok, mask, agg, 2, 4, norm_len=4).sum().item() == pytest.approx(v)


def test_clip_higher_keeps_the_gradient_of_a_rising_positive_token():
    """A > 0 and ratio 1.25: clip 0.2 cuts the gradient (ratio above 1.2), clip-high 0.28 does not."""
    old = torch.zeros(1, 1, dtype=torch.float64)
    for high, grad in ((0.2, 0.0), (0.28, -1.25)):
        logp = torch.full((1, 1), np.log(1.25), dtype=torch.float64, requires_grad=True)
        pt, _ = policy_token_loss(logp, old, torch.tensor([1.0], dtype=torch.float64),
                                  torch.ones(1, 1, dtype=torch.float64), LossSpec(clip_high=high))
        pt.sum().backward()
        assert logp.grad.item() == pytest.approx(grad)


def test_gspo_gradient_is_that_of_the_sequence_ratio():
    """GSPO's token form: gradient of max(-A s, -A clip(s)) with s = exp(mean_t(logp - old)),
    taken directly (the slow definition)."""
    logp, old, _, adv, mask = _random(3)
    spec = LossSpec(policy_loss="gspo", agg="seq-mean-token-mean", clip_low=0.05, clip_high=0.1)
    a = logp.clone().requires_grad_(True)
    pt, _ = policy_token_loss(a, old, adv, mask, spec)
    n_seq = float((mask.sum(-1) > 0).sum())
    sample_losses(pt, mask, spec.agg, n_seq, float(mask.sum())).sum().backward()
    b = logp.clone().requires_grad_(True)
    total = 0.0
    for i in range(mask.shape[0]):
        if mask[i].sum() == 0:
            continue
        s = torch.exp(((b[i] - old[i]) * mask[i]).sum() / mask[i].sum())
        total = total + torch.maximum(-adv[i] * s, -adv[i] * torch.clamp(s, 0.95, 1.1))
    (total / n_seq).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_tis_known_case():
    """old - rollout = 0.5 -> w = e^0.5 = 1.65 (< cap 2); 1.0 -> e = 2.72, truncated to 2;
    -1.0 -> 0.37. At ratio 1 the loss of A = 1 is -w per token, its gradient -w."""
    logp = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    rollout = torch.tensor([[-0.5, -1.0, 1.0]], dtype=torch.float64)
    pt, st = policy_token_loss(logp, logp.detach(), torch.tensor([1.0], dtype=torch.float64),
                               torch.ones(1, 3, dtype=torch.float64), LossSpec(tis_cap=2.0),
                               rollout_logp=rollout)
    w = [np.exp(0.5), 2.0, np.exp(-1.0)]
    np.testing.assert_allclose(pt.detach().numpy()[0], [-x for x in w])
    pt.sum().backward()
    np.testing.assert_allclose(logp.grad.numpy()[0], [-x for x in w])
    assert st["tis_clipped"] == 1 and st["tis_weight"] == pytest.approx(sum(w))
    assert st["logprob_diff"] == pytest.approx(2.5) and st["logprob_diff_max"] == pytest.approx(1.0)
