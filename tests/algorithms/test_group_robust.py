"""Group-robust PPO objective, the pure math (algorithms.group_robust): per-group objectives
against a loop reference, the robust term's modes, zero with one group, non-zero gradient
when groups differ. The RLlib learner: tests/platform/allocation/test_rllib_learner.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.group_robust import clipped_surrogate, group_objectives, robust_term


# ------------------------------------------------------------------------ pure math
def _loop_objectives(surrogate, groups, mask):
    out = {}
    for s, g, m in zip(surrogate.tolist(), groups.tolist(), mask.tolist()):
        if m:
            out.setdefault(g, []).append(s)
    return {g: sum(v) / len(v) for g, v in sorted(out.items())}


@pytest.mark.parametrize("seed", range(5))
def test_group_objectives_match_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    surrogate = torch.tensor(rng.normal(size=n))
    groups = torch.tensor(rng.integers(0, 5, size=n))
    mask = torch.tensor(rng.random(n) > 0.2)
    ids, means, counts = group_objectives(surrogate, groups, mask)
    expected = _loop_objectives(surrogate, groups, mask)
    assert ids.tolist() == list(expected)
    np.testing.assert_allclose(means.numpy(), list(expected.values()), rtol=1e-12)
    assert counts.sum().item() == int(mask.sum())
    for mode, ref in (("gap", lambda v: max(v) - min(v)),
                      ("worst_group", lambda v: sum(v) / len(v) - min(v))):
        value = robust_term(means, mode).item()
        assert value == pytest.approx(ref(list(expected.values())) if expected else 0.0)


@pytest.mark.parametrize("mode", ["gap", "worst_group"])
def test_robust_term_is_zero_with_one_group(mode):
    surrogate = torch.randn(40, requires_grad=True)
    _, means, _ = group_objectives(surrogate, torch.zeros(40, dtype=torch.long))
    term = robust_term(means, mode)
    assert term.item() == 0.0
    term.backward()
    assert torch.count_nonzero(surrogate.grad) == 0


@pytest.mark.parametrize("mode", ["gap", "worst_group"])
def test_robust_gradient_nonzero_when_groups_differ(mode):
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 2)
    obs = torch.randn(64, 3)
    actions = torch.randint(0, 2, (64,))
    groups = (obs[:, 0] > 0).long()
    advantages = torch.where(groups == 0, 1.0, -0.5) + 0.1 * torch.randn(64)
    logp = torch.log_softmax(policy(obs), -1).gather(1, actions[:, None]).squeeze(1)
    surrogate = clipped_surrogate(logp, logp.detach(), advantages, clip=0.2)
    _, means, _ = group_objectives(surrogate, groups)
    robust_term(means, mode).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_robust_term_rejects_unknown_mode():
    with pytest.raises(ValueError, match="robust_mode.*gap, worst_group"):
        robust_term(torch.zeros(2), "median")
