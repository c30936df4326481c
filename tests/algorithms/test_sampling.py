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
