"""Vector-reward PPO math: per-group GAE, per-capita objectives, robust weightings."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.group_robust import (
    ROBUST_OBJECTIVES,
    RobustState,
    get_objective,
    group_gae,
    mix_advantages,
    per_capita_objectives,
    robust_advantages,
    standardize,
)
from base.errors import ConfigError


def _slow_gae(r, v, boot, gamma, lam):
    """The definition, one stream and one step at a time: A_t = Σ_k (γλ)^k δ_{t+k}."""
    T, G = r.shape
    adv = np.zeros((T, G))
    for g in range(G):
        vals = list(v[:, g]) + [boot[g]]
        deltas = [r[t, g] + gamma * vals[t + 1] - vals[t] for t in range(T)]
        for t in range(T):
            adv[t, g] = sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t))
    return adv


@pytest.mark.parametrize("seed", range(6))
def test_group_gae_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    T, G = int(rng.integers(1, 40)), int(rng.integers(1, 5))
    r, v, boot = rng.normal(size=(T, G)), rng.normal(size=(T, G)), rng.normal(size=G)
    gamma, lam = rng.uniform(0.8, 1.0), rng.uniform(0.0, 1.0)
    adv, targets = group_gae(r, v, boot, gamma, lam)
    np.testing.assert_allclose(adv, _slow_gae(r, v, boot, gamma, lam), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(targets, adv + v)


def test_gae_streams_are_independent():
    """Changing group 1's stream leaves group 0's advantages alone."""
    rng = np.random.default_rng(0)
    r, v, boot = rng.normal(size=(10, 2)), rng.normal(size=(10, 2)), rng.normal(size=2)
    a1, _ = group_gae(r, v, boot, 0.99, 0.95)
    r2 = r.copy()
    r2[:, 1] += 5
    a2, _ = group_gae(r2, v, boot, 0.99, 0.95)
    np.testing.assert_array_equal(a1[:, 0], a2[:, 0])
    assert (a2[:, 1] > a1[:, 1]).all()


def test_per_capita_objectives_do_not_reward_size():
    """Two groups with the same per-patient outcome but 3:1 sizes get the same J."""
    groups = np.array([0, 0, 0, 1] * 25)
    vt = np.stack([np.full(100, 3.0), np.full(100, 1.0), np.zeros(100)], 1)  # majority: 3x
    j, share = per_capita_objectives(vt, groups, 3)
    np.testing.assert_allclose(share, [0.75, 0.25, 0.0])
    np.testing.assert_allclose(j[:2], [4.0, 4.0])
    assert np.isnan(j[2])  # no decision about group 2 in the batch


def test_worst_group_weights_move_to_the_worst_group():
    obj, state = get_objective("worst_group", eta=1.0), RobustState()
    j = np.array([1.0, -2.0, 0.5])
    qs = [obj.weights(j, state) for _ in range(10)]
    assert np.allclose([q.sum() for q in qs], 1.0)
    assert qs[0][1] > qs[0][2] > qs[0][0]  # ordered by how badly off each group is
    assert qs[-1][1] > 0.99  # the worst-off group takes the weight
    saved = state.state_dict()
    other = RobustState()
    other.load_state_dict(saved)
    np.testing.assert_array_equal(obj.weights(j, other), obj.weights(j, state))


def test_ggf_weights_decrease_from_worst_to_best():
    w = get_objective("ggf").weights(np.array([2.0, -1.0, 0.0, np.nan]), RobustState())
    np.testing.assert_allclose(w, [1 / 7, 4 / 7, 2 / 7, 0.0])
    with pytest.raises(ConfigError, match="robust_ggf_base"):
        get_objective("ggf", base=1.0)


def test_gap_raises_the_worst_and_lowers_the_best():
    w = get_objective("gap").weights(np.array([0.2, -3.0, 5.0]), RobustState())
    np.testing.assert_array_equal(w, [0.0, 1.0, -1.0])


def test_one_group_gives_the_total_advantage_for_every_mode():
    total = np.array([0.5, -1.0, 2.0])
    for name in ROBUST_OBJECTIVES:
        w = get_objective(name).weights(np.array([1.0]), RobustState())
        np.testing.assert_array_equal(robust_advantages(total[:, None] * 0.3, total, w), total)


def test_robust_advantages_weight_the_streams():
    ga = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(robust_advantages(ga, ga.sum(1), np.array([0.25, 0.75])),
                               [0.25, 1.5])


def test_mix_lambda_zero_is_identity_and_one_is_the_robust_part():
    rng = np.random.default_rng(1)
    a, rob = standardize(rng.normal(size=50)), rng.normal(size=50) * 7 + 3
    assert mix_advantages(a, rob, 0.0) is a
    np.testing.assert_allclose(mix_advantages(a, rob, 1.0), standardize(rob))
    with pytest.raises(ConfigError, match="robust_lambda"):
        mix_advantages(a, rob, 1.5)


def test_unknown_objective_lists_the_known():
    with pytest.raises(KeyError, match="gap, ggf, worst_group"):
        get_objective("maxmin")


def test_clipped_surrogate_clips_both_ways():
    import torch

    from algorithms.group_robust import clipped_surrogate

    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = clipped_surrogate(logp, torch.zeros(4), adv, 0.2)
    # A>0: the ratio is capped at 1.2; A<0: floored at 0.8 (pessimistic bound)
    assert torch.allclose(out, torch.tensor([1.2, 0.5, -1.5, -0.8]))
