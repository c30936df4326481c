"""FairGrad (arXiv 2504.14388): projection rule, surrogates, the optimizer wrapper, RL objectives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms.fairgrad import (
    FairGrad,
    dp_gap_surrogate,
    eo_gap_surrogate,
    fairgrad_losses_from_groups,
    project_conflicting,
    soft_range,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _loop_projection(grads, order_rng):
    """Slow, obvious PCGrad in float64 lists (reference for the vectorised version)."""
    gs = [np.asarray(g, dtype=np.float64) for g in grads]
    out = []
    for i, g in enumerate(gs):
        p = g.copy()
        others = [j for j in range(len(gs)) if j != i]
        for j in order_rng.permutation(others) if others else []:
            d = float(p @ gs[j])
            if d < 0 and gs[j] @ gs[j] > 0:
                p = p - d / float(gs[j] @ gs[j]) * gs[j]
        out.append(p)
    return out


def test_two_conflicting_gradients_have_no_negative_inner_product_after_projection():
    g1 = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.dot(g1, g2) < 0  # hand-built conflict
    p1, p2 = project_conflicting([g1, g2], rng=0)
    # every pair among projected and original gradients: >= 0 (up to float64 rounding)
    for a, b in [(p1, p2), (p1, g2), (p2, g1)]:
        assert float(torch.dot(a, b)) >= -1e-12
    # p1 is g1 minus its component along g2 (and nothing else)
    expected = g1 - torch.dot(g1, g2) / torch.dot(g2, g2) * g2
    torch.testing.assert_close(p1, expected)


@pytest.mark.parametrize("seed", range(20))
def test_random_conflicting_pairs_never_keep_a_negative_inner_product(seed):
    gen = torch.Generator().manual_seed(seed)
    g1 = torch.randn(50, generator=gen, dtype=torch.float64)
    g2 = -g1 + 0.5 * torch.randn(50, generator=gen, dtype=torch.float64)  # strongly conflicting
    p1, p2 = project_conflicting([g1, g2], rng=seed)
    scale = float(g1.norm() * g2.norm())
    assert float(torch.dot(p1, p2)) >= -1e-12 * scale
    assert float(torch.dot(p1, g2)) >= -1e-12 * scale
    assert float(torch.dot(p2, g1)) >= -1e-12 * scale


def test_non_conflicting_gradients_are_unchanged():
    g = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])]
    assert all(float(torch.dot(a, b)) >= 0 for a in g for b in g)
    out = project_conflicting(g, rng=3)
    for a, b in zip(g, out):
        assert torch.equal(a, b)
    # orthogonal counts as non-conflicting
    o = project_conflicting([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], rng=0)
    assert torch.equal(o[0], torch.tensor([1.0, 0.0])) and torch.equal(o[1], torch.tensor([0.0, 1.0]))


def test_projection_matches_loop_reference_with_same_random_order():
    rng = np.random.default_rng(7)
    for k in (2, 3, 5):
        grads = [rng.normal(size=30) for _ in range(k)]
        got = project_conflicting([torch.tensor(g) for g in grads], np.random.default_rng(11))
        want = _loop_projection(grads, np.random.default_rng(11))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-12)


def test_zero_gradient_is_never_divided_by():
    out = project_conflicting([torch.zeros(3), torch.tensor([1.0, -1.0, 0.0])], rng=0)
    assert all(torch.isfinite(o).all() for o in out)
    assert torch.equal(out[1], torch.tensor([1.0, -1.0, 0.0]))


def test_surrogates_equal_hard_gaps_on_saturated_scores():
    # logits of +-30: sigmoid is 0/1 to float precision, so the surrogate IS the hard gap
    y = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0], dtype=torch.float32)
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    pred = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0], dtype=torch.float32)
    logits = (pred * 2 - 1) * 30
    from fairlearn.metrics import (
        demographic_parity_difference,
        false_positive_rate_difference,
        true_positive_rate_difference,
    )

    dp = demographic_parity_difference(y.numpy(), pred.numpy(), sensitive_features=g.numpy())
    tpr = true_positive_rate_difference(y.numpy(), pred.numpy(), sensitive_features=g.numpy())
    fpr = false_positive_rate_difference(y.numpy(), pred.numpy(), sensitive_features=g.numpy())
    assert float(dp_gap_surrogate(logits, g)) == pytest.approx(dp, abs=1e-6)
    assert float(eo_gap_surrogate(logits, y, g)) == pytest.approx(tpr + fpr, abs=1e-6)


def test_soft_range_upper_bounds_the_range_within_2_tau_log_g():
    v = torch.tensor([0.1, 0.5, 0.3, 0.45])
    hard = float(soft_range(v))
    assert hard == pytest.approx(0.4)
    soft = float(soft_range(v, tau=0.05))
    assert hard <= soft <= hard + 2 * 0.05 * np.log(4) + 1e-6


def test_surrogate_gradients_reduce_the_gap():
    torch.manual_seed(0)
    logits = torch.randn(64, requires_grad=True)
    y = (torch.rand(64) > 0.5).float()
    g = torch.arange(64) % 2
    with torch.no_grad():
        logits[g == 1] += 2.0  # group 1 favoured
    before = float(eo_gap_surrogate(logits, y, g).detach())
    eo_gap_surrogate(logits, y, g).backward()
    with torch.no_grad():
        after = float(eo_gap_surrogate(logits - 1.0 * logits.grad, y, g))
    assert after < before


def test_fairgrad_step_writes_the_projected_sum_and_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0, 0.5]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fg = FairGrad(opt, seed=0)
    w = model.weight
    # losses with gradients (1, 0, 0.5) and (-1, 1, 0): they conflict
    l1 = (w * torch.tensor([[1.0, 0.0, 0.5]])).sum()
    l2 = (w * torch.tensor([[-1.0, 1.0, 0.0]])).sum()
    w0 = w.detach().clone()
    stats = fg.step([l1, l2])
    g1, g2 = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([-1.0, 1.0, 0.0])
    p = project_conflicting([g1, g2], np.random.default_rng(0))
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (p[0] + p[1]).view(1, 3))
    assert stats.conflicts == 2 and stats.min_cosine < 0


def test_fairgrad_equals_plain_step_without_conflict():
    def make():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    x = torch.randn(16, 4)
    a, b = make(), make()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    loss = lambda m: (m(x) ** 2).mean()
    FairGrad(opt_a, seed=0).step([loss(a), 0.5 * loss(a)])  # same direction: no projection
    opt_b.zero_grad()
    (1.5 * loss(b)).backward()
    opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_fairgrad_losses_from_groups_definition_and_gradients():
    torch.manual_seed(0)
    per_sample = torch.rand(10, requires_grad=True)
    groups = np.array(["b", "a", "b", "a", "c", "c", "a", "b", "c", "a"])
    losses = fairgrad_losses_from_groups(per_sample, groups)
    assert len(losses) == 4
    assert float(losses[0]) == pytest.approx(float(per_sample.mean()))
    df = pd.DataFrame({"g": groups, "l": per_sample.detach().numpy()})
    means = df.groupby("g")["l"].mean()  # sorted group order a, b, c
    for k, name in enumerate(["a", "b", "c"]):
        assert float(losses[1 + k]) == pytest.approx(0.5 * (means[name] - means.mean()) ** 2, rel=1e-5)
    # every objective is differentiable w.r.t. the per-sample losses
    for loss in losses:
        (grad,) = torch.autograd.grad(loss, per_sample, retain_graph=True)
        assert torch.isfinite(grad).all()
    # one group -> only the task loss; mismatched lengths -> error
    assert len(fairgrad_losses_from_groups(per_sample, torch.zeros(10))) == 1
    with pytest.raises(ValueError):
        fairgrad_losses_from_groups(per_sample, groups[:5])


def test_fairgrad_with_group_objectives_narrows_group_loss_gap():
    """A shared linear model fit to two groups with different targets: FairGrad with per-group
    objectives ends with a much smaller minority-minus-majority loss gap than plain descent on
    the mean. Measured with this setup at data/model seeds 0-4 (100 SGD steps, lr 0.1): plain
    gap 1.36-2.01, FairGrad gap 0.017-0.095 (mean loss 0.34-0.60 -> 0.56-0.84, the price)."""
    torch.manual_seed(0)
    n = 200
    x = torch.randn(n, 3)
    group = (torch.arange(n) < 160).long()  # 160 majority, 40 minority
    w_major, w_minor = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, -0.5])
    y = torch.where(group == 1, x @ w_major, x @ w_minor) + 0.1 * torch.randn(n)

    def fit(use_fairgrad):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        fg = FairGrad(opt, seed=0)
        for _ in range(100):
            per_sample = (model(x).squeeze(-1) - y) ** 2
            if use_fairgrad:
                fg.step(fairgrad_losses_from_groups(per_sample, group))
            else:
                opt.zero_grad()
                per_sample.mean().backward()
                opt.step()
        with torch.no_grad():
            per_sample = (model(x).squeeze(-1) - y) ** 2
        return float(per_sample[group == 0].mean() - per_sample[group == 1].mean())

    plain, fair = fit(False), fit(True)
    assert plain > 1.0
    assert fair < 0.3
