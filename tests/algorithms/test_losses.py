"""``algorithms.losses.ppo_token_loss``: the vectorized loss against a slow, obvious loop."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.losses import ppo_token_loss

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
