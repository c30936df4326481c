"""GRPO+resampling: equal group counts per data source, originals kept, reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.sampling import balanced_indices
from base.errors import UsageError


def _key(g):
    return "unknown" if g in (None, "unknown", "") else g


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                          st.sampled_from(["F", "M", "X", None])), max_size=40),
       st.integers(0, 2**31 - 1))
def test_groups_are_equal_within_each_source(rows, seed):
    ds = [d for d, _ in rows]
    gs = [g for _, g in rows]
    idx = balanced_indices(ds, gs, np.random.default_rng(seed))
    assert Counter(idx.tolist()) >= Counter(range(len(rows)))  # every original kept
    counts = Counter((ds[i], _key(gs[i])) for i in idx)
    for d in set(ds):
        sizes = Counter(_key(g) for dd, g in rows if dd == d)
        for g in sizes:
            assert counts[(d, g)] == max(sizes.values())
    # copies come from the same (source, group)
    for i in idx:
        assert 0 <= i < len(rows)
    np.testing.assert_array_equal(idx, balanced_indices(ds, gs, np.random.default_rng(seed)))


def test_minority_oversampled_on_real_proportions():
    ds = ["x"] * 100 + ["y"] * 10
    gs = ["F"] * 90 + ["M"] * 10 + ["F"] * 5 + [None] * 5
    idx = balanced_indices(ds, gs, 0, shuffle=False)
    c = Counter((ds[i], _key(gs[i])) for i in idx)
    assert c == {("x", "F"): 90, ("x", "M"): 90, ("y", "F"): 5, ("y", "unknown"): 5}


def test_length_mismatch():
    with pytest.raises(UsageError, match="group"):
        balanced_indices(["a", "b"], ["F"], 0)


# ------------------------------------------------------------------------------------------
# DAPO dynamic sampling


def _filter_loop(scores, prompt_index, groups, correct):
    """dynamic_filter from its definition, one prompt at a time."""
    keep, by = [], {}
    for p, g in enumerate(groups):
        mine = [i for i, q in enumerate(prompt_index) if q == p]
        if not mine:
            keep.append(False)
            continue
        const = len(mine) >= 2 and len({scores[i] for i in mine}) == 1
        keep.append(not const)
        acc = by.setdefault(g, {"prompts": 0, "dropped": 0, "all_correct": 0, "all_wrong": 0})
        acc["prompts"] += 1
        acc["dropped"] += const
        acc["all_correct"] += const and all(correct[i] for i in mine)
        acc["all_wrong"] += const and not any(correct[i] for i in mine)
    return np.array(keep), by


def test_dynamic_filter_known_answer():
    """4 prompts x 3: all right (minority), all wrong (minority), mixed, one completion only.
    The two constant ones are dropped, and the minority loses both its prompts."""
    from algorithms.sampling import dynamic_filter

    scores = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0.0])
    idx = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    res = dynamic_filter(scores, idx, ["min", "min", "maj", "maj"], correct=scores > 0)
    assert res.keep.tolist() == [False, False, True, True]  # a single completion is kept (verl)
    assert res.by_group["min"] == {"prompts": 2, "dropped": 2, "all_correct": 1, "all_wrong": 1}
    assert res.by_group["maj"] == {"prompts": 2, "dropped": 0, "all_correct": 0, "all_wrong": 0}
    m = res.metrics()
    assert m["filter/by_group/min/dropped"] == 2 and m["filter/by_group/maj/dropped"] == 0
    assert m["filter/dropped"] == 2 and m["filter/prompts"] == 4
    merged = res.merge(dynamic_filter(scores[:3], idx[:3], ["min"], correct=scores[:3] > 0))
    assert merged.by_group["min"]["all_correct"] == 2 and merged.keep.tolist() == [False]


def test_dynamic_filter_matches_loop():
    from algorithms.sampling import dynamic_filter

    rng = np.random.default_rng(0)
    for _ in range(30):
        P = int(rng.integers(1, 8))
        sizes = rng.integers(0, 5, P)
        idx = np.repeat(np.arange(P), sizes)
        scores = rng.choice([0.0, 0.5, 1.0], len(idx))
        correct = scores > 0.7
        groups = list(rng.choice(["a", "b", "c"], P))
        res = dynamic_filter(scores, idx, groups, correct)
        keep, by = _filter_loop(scores, idx, groups, correct)
        assert res.keep.tolist() == keep.tolist() and res.by_group == by
