"""FairGRPO against its authors' code, and each fidelity choice on a known case.

``ReferenceFairGRPO`` is a line-by-line numpy port of ``compute_fair_grpo_outcome_advantage``,
``_select_k_elbow`` and ``_cluster_info_question`` from ``DDVD233/mirl``
(``verl/trainer/ppo/core_algos.py``): module globals become instance state, torch becomes
float64 numpy, debug prints are dropped. ``index`` is a fresh id per visit, as verl's uuid
``uid``. The estimator with the reference's settings (``negative_rewards="reference"``,
``history="visits"``) must give the same numbers on multi-step batches.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from algorithms.advantages import AdvantageInputError, PromptMeta, get_estimator
from algorithms.advantages.discovery import elbow_kmeans, reward_matrix

REF = {"negative_rewards": "reference", "history": "visits"}


def select_k_elbow(vals, k_max=10, tol=0.10):
    """``_select_k_elbow`` as written."""
    from sklearn.cluster import KMeans

    unique_cnt = len(np.unique(vals, axis=0))
    k_cap = min(k_max, unique_cnt)
    ks = range(1, k_cap + 1)
    inertias = [KMeans(n_clusters=k, n_init="auto", random_state=0).fit(vals).inertia_ for k in ks]
    if len(inertias) == 1:
        return 1
    drops = np.diff(inertias) * -1.0
    for i in range(1, len(drops)):
        if drops[i] < tol * drops[i - 1]:
            return i + 1
    return ks[-1]


def cluster_info_question(vectors):
    """``_cluster_info_question``: (assignments, counts, centroids)."""
    from sklearn.cluster import KMeans

    X = np.stack(vectors, axis=0)
    k_opt = select_k_elbow(X, k_max=3)
    km = KMeans(n_clusters=k_opt, n_init="auto", random_state=0).fit(X)
    _, counts = np.unique(km.labels_, return_counts=True)
    return km.labels_, counts.astype(float), km.cluster_centers_, k_opt


class ReferenceFairGRPO:
    """``compute_fair_grpo_outcome_advantage`` with its global history as instance state."""

    def __init__(self, epsilon=1e-6):
        self.eps = epsilon
        self.demo_stats = defaultdict(lambda: defaultdict(lambda: {"vectors": [], "q_ids": [], "count": 0}))
        self.unk_stats = defaultdict(lambda: {"vectors": [], "q_ids": [], "count": 0})
        self.k = {}  # the k the elbow picked per domain (for the test)

    def __call__(self, raw_scores, index, domain_info, demo_info):
        eps, B = self.eps, len(raw_scores)
        q2rollouts, q2domain, q2demo = defaultdict(list), {}, {}
        for i in range(B):
            q2rollouts[index[i]].append(float(raw_scores[i]))
            q2domain[index[i]], q2demo[index[i]] = domain_info[i], demo_info[i]
        assert len({len(v) for v in q2rollouts.values()}) == 1
        for qid, v in q2rollouts.items():
            vec = np.asarray(v)
            dstat = (self.unk_stats[q2domain[qid]] if q2demo[qid] == "UNK"
                     else self.demo_stats[q2domain[qid]][q2demo[qid]])
            dstat["vectors"].append(vec)
            dstat["q_ids"].append(qid)
            dstat["count"] += 1
        scores = np.array(raw_scores, dtype=float)
        mean = {q: np.mean(v) for q, v in q2rollouts.items()}
        std = {q: np.std(v, ddof=1) for q, v in q2rollouts.items()}
        for i in range(B):
            scores[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + eps)
        cache = {}
        for dom, dstat in self.unk_stats.items():
            if dstat["count"] > 0:
                assign, counts, centroids, k = cluster_info_question(dstat["vectors"])
                cache[dom] = {"assign": assign, "counts": counts, "centroids": centroids,
                              "q_ids": dstat["q_ids"]}
                self.k[dom] = k
        for i in range(B):
            qid = index[i]
            dom, demo = q2domain[qid], q2demo[qid]
            N_d, all_dom = 0.0, []
            for dstat in self.demo_stats[dom].values():
                N_d += dstat["count"]
                for vec in dstat["vectors"]:
                    all_dom.extend(vec.tolist())
            N_d += self.unk_stats[dom]["count"]
            for vec in self.unk_stats[dom]["vectors"]:
                all_dom.extend(vec.tolist())
            mu_d = float(np.mean(all_dom)) if all_dom else eps
            T_d = max(math.sqrt(N_d) * mu_d, eps)
            if demo == "UNK":
                c = cache[dom]
                cl = c["assign"][c["q_ids"].index(qid)]
                N_g, mu_g = float(c["counts"][cl]), float(c["centroids"][cl].mean())
            else:
                dstat = self.demo_stats[dom][demo]
                N_g = float(dstat["count"])
                mu_g = float(np.mean([r for vec in dstat["vectors"] for r in vec]))
            factor = T_d * math.sqrt(N_g) * mu_g
            with np.errstate(divide="ignore", invalid="ignore"):
                scaled = np.float64(scores[i]) / np.float64(factor)
            if not math.isnan(scaled) and not math.isinf(scaled):
                scores[i] = scaled
        return scores / (np.std(scores, ddof=1) + eps)


def _call_both(est, state, ref, rewards, G, domains, demos, step):
    P = len(domains)
    uids = [f"s{step}-q{q}" for q in range(P)]  # verl: a fresh uuid per prompt per step
    idx = np.repeat(np.arange(P), G)
    meta = PromptMeta(domains, [None if d == "UNK" else d for d in demos], uids)
    got = est(rewards, idx, meta, state)
    want = ref(rewards, [uids[q] for q in idx], [domains[q] for q in idx], [demos[q] for q in idx])
    return got, want


@pytest.mark.parametrize("levels", [(0.0, 0.25, 0.5, 1.0), (-1.0, 0.0, 1.0)],
                         ids=["rewards>=0", "signed"])
def test_labelled_path_equals_the_reference_over_steps(levels):
    """Multi-step random batches, 2 data sources, 3 groups: equal to 1e-12 (with rewards below
    0 too: sign flips and unscaled zero factors as the reference has them)."""
    rng = np.random.default_rng(0)
    est = get_estimator("fair_grpo", **REF)
    state, ref = est.init_state(), ReferenceFairGRPO()
    for step in range(4):
        P, G = int(rng.integers(3, 9)), 4
        domains = list(rng.choice(["chexpert", "ham"], P))
        demos = list(rng.choice(["M,A1", "F,A3", "F,UNK"], P))
        rewards = rng.choice(levels, P * G)
        got, want = _call_both(est, state, ref, rewards, G, domains, demos, step)
        np.testing.assert_allclose(got.advantages, want, rtol=1e-12, atol=1e-12)


def _separated(rng, centres, per, G, noise=0.02):
    """Reward vectors (sorted within each prompt, so the reference's unsorted vectors equal
    this project's sorted ones) around well separated per-prompt success levels."""
    rows = [np.sort(np.clip(c + noise * rng.standard_normal(G), 0, 1)) for c in centres for _ in range(per)]
    return rows, [i for i, _ in enumerate(centres) for _ in range(per)]


def test_latent_path_equals_the_reference_over_steps():
    """Unlabelled prompts clustered over each source's history (3 steps, 2 sources, mixed
    with labelled prompts; the reference's KMeans call): same k and advantages as the reference."""
    rng = np.random.default_rng(1)
    est = get_estimator("fair_grpo_nd", kmeans_init="reference", **REF)
    state, ref = est.init_state(), ReferenceFairGRPO()
    for step in range(3):
        rows, _ = _separated(rng, (0.05, 0.35, 0.9), per=4, G=4)
        P = len(rows)
        order = rng.permutation(P)
        rows = [rows[i] for i in order]
        domains = ["d0" if q % 2 else "d1" for q in range(P)]
        demos = ["UNK" if q % 3 else "F,A2" for q in range(P)]
        got, want = _call_both(est, state, ref, np.concatenate(rows), 4, domains, demos, step)
        np.testing.assert_allclose(got.advantages, want, rtol=1e-9, atol=1e-9)
        assert (got.diagnostics["k/d0"], got.diagnostics["k/d1"]) == (ref.k["d0"], ref.k["d1"])
        assert got.diagnostics["history/unknown/d0"] == sum(len(rows) // 2 for _ in range(step + 1)) - 2 * (step + 1)


def test_elbow_rules_on_two_planted_groups():
    """Two well separated groups (success rates 0.1 / 0.9, G = 8, 40 prompts each), 12 seeds.
    ``rule="drop", init="reference"`` picks exactly the reference's k (ported above), k = 2 in
    9 of 12; with the seeded k-means (best optima: the same inertias as 10 k-means++ restarts)
    the drop rule picks k = 2 in 6; the earlier inertia rule picks k = 3 in all 12."""
    from sklearn.cluster import KMeans

    picks = {"reference": [], "drop/reference": [], "drop/seeded": [], "inertia": []}
    for seed in range(12):
        rng = np.random.default_rng(seed)
        rates = np.repeat([0.1, 0.9], 40)
        rewards = (rng.random((80, 8)) < rates[:, None]).astype(float).ravel()
        X = reward_matrix(rewards, np.repeat(np.arange(80), 8), np.full(80, 8.0))
        picks["reference"].append(select_k_elbow(X, k_max=3))
        picks["drop/reference"].append(elbow_kmeans(X, rule="drop", init="reference").k)
        seeded = elbow_kmeans(X, rule="drop")
        picks["drop/seeded"].append(seeded.k)
        picks["inertia"].append(elbow_kmeans(X, rule="inertia").k)
        best = [KMeans(k, n_init=10, random_state=0).fit(X).inertia_ for k in (2, 3)]
        np.testing.assert_allclose(seeded.inertias[1:], best, rtol=1e-9)
    assert picks["drop/reference"] == picks["reference"], picks
    assert picks["reference"].count(2) == 9, picks
    assert picks["drop/seeded"].count(2) == 6, picks
    assert picks["inertia"].count(3) == 12, picks


# ------------------------------------------------------------------------------------------
# 1. rewards below zero


def _hard_easy_batch(rng, n_hard=3, n_easy=9, G=8):
    hard = (rng.random((n_hard, G)) < 0.2).astype(float)
    easy = (rng.random((n_easy, G)) < 0.8).astype(float)
    hard[:, 0], easy[:, 0] = 1.0, 0.0   # every prompt has variance
    rewards = np.concatenate([hard, easy]).ravel()
    P = n_hard + n_easy
    meta = PromptMeta(["d"] * P, ["hard"] * n_hard + ["easy"] * n_easy, [f"p{i}" for i in range(P)])
    return rewards, np.repeat(np.arange(P), G), meta


def _mean_abs(adv, idx, meta, g):
    return np.abs(adv[np.array([meta.group[q] == g for q in idx])]).mean()


def test_centred_rewards_give_the_same_advantages_as_shifted_ones():
    """shift (the default): rewards in {-1, +1} give FairGRPO's {0, 1} advantages (GRPO scores
    are affine-invariant and the shifted difficulty doubles every T, a constant the batch std
    removes); no sign is flipped and the hard group still gets the larger advantages."""
    rng = np.random.default_rng(3)
    r01, idx, meta = _hard_easy_batch(rng)
    est = get_estimator("fair_grpo")
    a01 = est(r01, idx, meta, est.init_state()).advantages
    signed = est(2 * r01 - 1, idx, meta, st := est.init_state())
    np.testing.assert_allclose(signed.advantages, a01, rtol=1e-5, atol=1e-5)
    assert signed.diagnostics["reward_shift/d"] == -1.0 and st.shift("d") == -1.0
    grpo = get_estimator("grpo")(2 * r01 - 1, idx, meta).advantages
    assert np.all(np.sign(signed.advantages) == np.sign(grpo))
    assert _mean_abs(signed.advantages, idx, meta, "hard") > 2 * _mean_abs(signed.advantages, idx, meta, "easy")


def test_reference_mode_flips_the_sign_of_a_group_with_negative_mean():
    """The reference's factor: the hard group's mean reward on {-1, +1} is below 0, so its
    advantages point the other way from GRPO's (the behaviour the default avoids)."""
    rng = np.random.default_rng(3)
    r01, idx, meta = _hard_easy_batch(rng)
    est = get_estimator("fair_grpo", negative_rewards="reference")
    adv = est(2 * r01 - 1, idx, meta, est.init_state()).advantages
    grpo = get_estimator("grpo")(2 * r01 - 1, idx, meta).advantages
    hard = np.array([meta.group[q] == "hard" for q in idx])
    nz = grpo != 0
    assert np.all(np.sign(adv[hard & nz]) == -np.sign(grpo[hard & nz]))
    assert np.all(np.sign(adv[~hard & nz]) == np.sign(grpo[~hard & nz]))


def test_error_mode_names_the_option():
    rng = np.random.default_rng(3)
    r01, idx, meta = _hard_easy_batch(rng)
    est = get_estimator("fair_grpo", negative_rewards="error")
    est(r01, idx, meta, est.init_state())
    with pytest.raises(AdvantageInputError, match=r"rewards: .*>= 0.*negative_rewards='shift'"):
        est(r01 - 0.5, idx, meta, est.init_state())


@pytest.fixture(scope="module")
def faro_reward():
    from envs.clinical.rewards import REWARDS

    return REWARDS.get("faro")(steps=60, n_items=400, n_pairs=3000)


def test_fair_grpo_with_the_faro_reward(faro_reward):
    """The Faro reward (centred on 0) through the reward registry into fair_grpo: the
    advantages equal those of the rewards shifted by the data source's minimum (known answer),
    keep GRPO's signs, and the reference's factor would flip some."""
    rng = np.random.default_rng(4)
    P, G = 12, 4
    samples, completions, groups = [], [], []
    for q in range(P):
        row = {"options": ["pneumonia", "effusion", "normal"], "answer": "effusion",
               "sex": "F" if q % 3 else "M", "age": 30 + 5 * q}
        p_right = 0.2 if q % 3 else 0.8
        for _ in range(G):
            right = rng.random() < p_right
            formatted = rng.random() < 0.8
            letter = "B" if right else "A"
            completions.append(f"<answer>{letter}</answer>" if formatted else letter)
            samples.append(row)
        groups.append(row["sex"])
    rewards = faro_reward(completions, samples)
    assert rewards.min() < 0 < rewards.max()
    idx = np.repeat(np.arange(P), G)
    meta = PromptMeta(["faro-ds"] * P, groups, [f"q{q}" for q in range(P)])
    est = get_estimator("fair_grpo")
    adv = est(rewards, idx, meta, est.init_state()).advantages
    shifted = est(rewards - rewards.min(), idx, meta, est.init_state()).advantages
    np.testing.assert_allclose(adv, shifted, rtol=1e-9, atol=1e-9)
    grpo = get_estimator("grpo")(rewards, idx, meta).advantages
    assert np.isfinite(adv).all() and np.all(np.sign(adv) == np.sign(grpo))
    ref = get_estimator("fair_grpo", negative_rewards="reference")
    flipped = np.sign(ref(rewards, idx, meta, ref.init_state()).advantages) == -np.sign(grpo)
    assert flipped[grpo != 0].any()


# ------------------------------------------------------------------------------------------
# 2-4. unknown groups: history clustering


def test_one_unlabelled_prompt_is_placed_by_the_source_history():
    """Step 1: 30 unlabelled prompts at two difficulty levels. Step 2: one hard prompt. With
    the source history it joins the hard cluster (N_c = 15, mu_c near 0.1); clustering the
    batch alone leaves it a cluster of one, scaled by all unlabelled prompts of the source."""
    rng = np.random.default_rng(5)
    rows, _ = _separated(rng, (0.1, 0.8), per=15, G=4)
    meta1 = PromptMeta(["d"] * 30, [None] * 30, [f"p{i}" for i in range(30)])
    one = np.sort(np.clip(0.1 + 0.02 * rng.standard_normal(4), 0, 1))
    meta2 = PromptMeta(["d"], [None], ["new"])
    idx1, idx2 = np.repeat(np.arange(30), 4), np.zeros(4, dtype=int)
    src = get_estimator("fair_grpo_nd")
    s_state = src.init_state()
    src(np.concatenate(rows), idx1, meta1, s_state)
    res = src(one, idx2, meta2, s_state)
    assert res.prompt_group == ["d|unknown/cluster0"] and res.diagnostics["k/d"] == 2
    assert res.diagnostics["history/unknown/d"] == 31
    batch = get_estimator("fair_grpo_nd", cluster_history="batch")
    b_state = batch.init_state()
    batch(np.concatenate(rows), idx1, meta1, b_state)
    assert batch(one, idx2, meta2, b_state).diagnostics["k/d"] == 1


def test_partially_known_group_keys_are_known_groups():
    """"F|unknown" (age missing) is a group of its own, never clustered; only a wholly
    unknown key goes to the latent path."""
    rng = np.random.default_rng(6)
    rows, _ = _separated(rng, (0.1, 0.8), per=6, G=4)
    groups = ["F|unknown"] * 6 + [None] * 6
    meta = PromptMeta(["d"] * 12, groups, [f"p{i}" for i in range(12)])
    est = get_estimator("fair_grpo_nd")
    res = est(np.concatenate(rows), np.repeat(np.arange(12), 4), meta, est.init_state())
    assert res.prompt_group[:6] == ["d|F|unknown"] * 6
    assert all(g.startswith("d|unknown/cluster") for g in res.prompt_group[6:])
    assert res.diagnostics["unknown_fraction"] == 0.5


def test_history_visits_counts_every_visit_and_unique_counts_prompts():
    rng = np.random.default_rng(7)
    r01, idx, meta = _hard_easy_batch(rng)
    for history, n in (("unique", 12), ("visits", 36)):
        est = get_estimator("fair_grpo", history=history)
        state = est.init_state()
        for _ in range(3):
            est(r01, idx, meta, state)
        assert len(state) == n and state.stats("d", "hard")[0] == n // 4


# ------------------------------------------------------------------------------------------
# 6. GroupDRO


@pytest.mark.parametrize("weighting,share", [("group_mean", 0.824), ("per_example", 0.610)])
def test_group_dro_share_of_a_hard_quarter(weighting, share):
    """q_hard / q_easy = 4.69, hard group = 25 % of the prompts: Sagawa's group-mean objective
    gives it q_hard / sum q = 82 % of the weight, per-example weights 61 %."""
    P, G = 8, 4
    meta = PromptMeta(["d"] * P, ["hard"] * 2 + ["easy"] * 6, [f"p{i}" for i in range(P)])
    idx = np.repeat(np.arange(P), G)
    rewards = np.tile([0.0, 1.0, 0.0, 1.0], P)
    est = get_estimator("group_dro", eta=0.0, weighting=weighting)
    state = est.init_state()
    state.log_q = {"d|hard": math.log(4.69), "d|easy": 0.0}
    diag = est(rewards, idx, meta, state).diagnostics
    w_hard, w_easy = diag["dro_weight/d|hard"], diag["dro_weight/d|easy"]
    got = 2 * w_hard / (2 * w_hard + 6 * w_easy)
    assert got == pytest.approx(share, abs=1e-3)
    if weighting == "group_mean":
        assert (2 * w_hard + 6 * w_easy) / P == pytest.approx(1.0)  # mean weight 1
