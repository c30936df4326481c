"""Fairness weightings over any base estimator: presets are compositions, uniform groups give
the base's advantages up to the batch scale, a rare hard group gets larger advantages, a slow
loop reference over steps, clear errors."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from algorithms.advantages import (
    WEIGHTINGS,
    PromptMeta,
    base_estimators,
    get_estimator,
    make_estimator,
)
from base.errors import ConfigError
from base.registry import RegistryError

BASES = ("grpo", "dr_grpo", "rloo", "reinforce_pp")


def _balanced(rng, sources=("a", "b"), groups=("F", "M"), per=6, G=8):
    """Every (source, group) gets the same multiset of reward vectors."""
    base = rng.integers(0, 2, size=(per, G)).astype(float)
    base[:, 0], base[:, 1] = 0.0, 1.0
    rows, ds, gs = [], [], []
    for d in sources:
        for g in groups:
            rows += list(base)
            ds += [d] * per
            gs += [g] * per
    P = len(rows)
    return np.concatenate(rows), np.repeat(np.arange(P), G), PromptMeta(ds, gs, [f"p{i}" for i in range(P)])


def test_bases_are_the_stateless_estimators():
    assert sorted(base_estimators()) == sorted(BASES)
    assert sorted(WEIGHTINGS.names()) == ["fairgrpo", "fairgrpo_nd", "group_dro"]


@pytest.mark.parametrize("preset,weighting", [("fair_grpo", "fairgrpo"), ("fair_grpo_nd", "fairgrpo_nd"),
                                              ("group_dro", "group_dro")])
def test_presets_are_grpo_under_a_weighting(preset, weighting):
    rng = np.random.default_rng(0)
    a, b = get_estimator(preset), make_estimator("grpo", fairness=weighting)
    sa, sb = a.init_state(), b.init_state()
    for _ in range(3):
        r, idx, meta = _balanced(rng)
        meta.group = [None if i % 5 == 0 else g for i, g in enumerate(meta.group)]
        r = r * rng.random(len(r))  # unequal groups
        np.testing.assert_array_equal(a(r, idx, meta, sa).advantages, b(r, idx, meta, sb).advantages)
    assert sa.state_dict() == sb.state_dict()


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("weighting", ["fairgrpo", "group_dro"])
def test_uniform_groups_give_the_base_up_to_the_batch_scale(base, weighting):
    """Equal groups: FairGRPO's factor is one constant, so base / std(base); GroupDRO's weights
    all start at 1, so the base exactly."""
    rng = np.random.default_rng(1)
    r, idx, meta = _balanced(rng)
    lengths = rng.integers(1, 9, len(r)).astype(float)
    plain = get_estimator(base)(r, idx, meta, lengths=lengths).advantages
    est = make_estimator(base, fairness=weighting)
    got = est(r, idx, meta, est.init_state(), lengths=lengths).advantages
    want = plain / np.std(plain, ddof=1) if weighting == "fairgrpo" else plain
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _rare_hard_batch(rng, n_common=12, n_rare=2, G=8):
    """A common group at success rate 0.75 and a rare one at 0.25 (same number of right
    answers per prompt within each group, so the base treats prompts alike)."""
    common = np.array([1, 1, 1, 1, 1, 1, 0, 0.0])
    rare = np.array([1, 1, 0, 0, 0, 0, 0, 0.0])
    rows = [rng.permutation(common) for _ in range(n_common)] + [rng.permutation(rare) for _ in range(n_rare)]
    P = n_common + n_rare
    meta = PromptMeta(["d"] * P, ["common"] * n_common + ["rare"] * n_rare, [f"p{i}" for i in range(P)])
    return np.concatenate(rows), np.repeat(np.arange(P), G), meta


def _ratio(adv, idx, meta):
    rare = np.array([meta.group[q] == "rare" for q in idx])
    return np.abs(adv[rare]).mean() / np.abs(adv[~rare]).mean()


@pytest.mark.parametrize("base", BASES)
def test_a_rare_hard_group_gets_larger_advantages_over_any_base(base):
    """Known answer: rare group 2 prompts at mean 0.25, common 12 at 0.75. Its factor is
    T_rare / T_common = sqrt(2) * 0.25 / (sqrt(12) * 0.75) = 0.136, so relative to the base its
    |advantage| grows 7.3x (the base's own rare/common ratio times 7.35). A weight multiplied
    instead of divided shrinks it 7.3x and fails."""
    rng = np.random.default_rng(2)
    r, idx, meta = _rare_hard_batch(rng)
    lengths = np.full(len(r), 4.0)
    plain = _ratio(get_estimator(base)(r, idx, meta, lengths=lengths).advantages, idx, meta)
    est = make_estimator(base, fairness="fairgrpo")
    fair = _ratio(est(r, idx, meta, est.init_state(), lengths=lengths).advantages, idx, meta)
    gain = (math.sqrt(12) * 0.75) / (math.sqrt(2) * 0.25)
    assert fair / plain == pytest.approx(gain, rel=1e-4)
    assert fair > 5 * plain


class WeightedLoop:
    """FairGRPO weighting over any base, from the definition; history recomputed each step."""

    def __init__(self, base_fn, eps=1e-6):
        self.base_fn, self.eps, self.prompts = base_fn, eps, {}

    def T(self, items):
        n = len(items)
        return max(math.sqrt(n) * statistics.fmean(items), self.eps) if n else self.eps

    def __call__(self, rewards, idx, meta):
        P = len(meta.data_source)
        s = self.base_fn(rewards, idx, P)
        for q in range(P):
            rs = [float(r) for r, i in zip(rewards, idx) if i == q]
            if rs:
                self.prompts[meta.prompt_id[q]] = (meta.data_source[q], meta.group[q], statistics.fmean(rs))
        a = []
        for si, q in zip(s, idx):
            d, g = meta.data_source[q], meta.group[q]
            td = self.T([m for (dd, _, m) in self.prompts.values() if dd == d])
            tg = self.T([m for (dd, gg, m) in self.prompts.values() if dd == d and gg == g])
            a.append(si / min(max(td * tg, self.eps), 1e6))
        a = np.array(a)
        sd = statistics.stdev(a) if len(a) > 1 else 0.0
        return a / (sd + self.eps) if sd > 0 else a


def _rloo_loop(rewards, idx, P):
    out = []
    for r, q in zip(rewards, idx):
        rs = [float(x) for x, i in zip(rewards, idx) if i == q]
        out.append(0.0 if len(rs) < 2 else r - (sum(rs) - r) / (len(rs) - 1))
    return np.array(out)


def _dr_grpo_loop(rewards, idx, P):
    out = []
    for r, q in zip(rewards, idx):
        rs = [float(x) for x, i in zip(rewards, idx) if i == q]
        out.append(0.0 if len(rs) < 2 else r - statistics.fmean(rs))
    return np.array(out)


@pytest.mark.parametrize("base,loop", [("rloo", _rloo_loop), ("dr_grpo", _dr_grpo_loop)])
def test_weighted_matches_loop_over_steps(base, loop):
    rng = np.random.default_rng(3)
    est = make_estimator(base, fairness="fairgrpo")
    state, ref = est.init_state(), WeightedLoop(loop)
    for step in range(4):
        P = int(rng.integers(3, 10))
        ids = rng.choice(15, P, replace=False)
        sizes = rng.integers(1, 6, P)
        idx = np.repeat(np.arange(P), sizes)
        rewards = rng.choice([0.0, 0.5, 1.0], len(idx))
        meta = PromptMeta([f"d{i % 2}" for i in ids], [["F", "M", "X"][i % 3] for i in ids],
                          [f"p{i}" for i in ids])
        np.testing.assert_allclose(est(rewards, idx, meta, state).advantages,
                                   ref(rewards, idx, meta), rtol=1e-7, atol=1e-7)


def test_composition_errors_name_the_field():
    with pytest.raises(ConfigError) as exc:
        make_estimator("fair_grpo", fairness="fairgrpo")
    assert exc.value.field == "estimator" and "rloo" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        make_estimator("rloo", fairness="fairgrpo", eta=0.5)  # a group_dro field
    assert exc.value.field == "eta" and "factor_max" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        make_estimator("reinforce_pp", fairness="fairgrpo", whiten="words")
    assert exc.value.field == "whiten"
    with pytest.raises(RegistryError, match="fairgrpo_nd"):
        make_estimator("grpo", fairness="fairness")
    est = make_estimator("reinforce_pp", fairness="fairgrpo_nd", whiten="sequences", k_max=2)
    assert est.base.config.whiten == "sequences" and est.weighting.config.k_max == 2
    assert est.name == "reinforce_pp+fairgrpo_nd"
