"""Cohort loaders read real files from installed packages and describe their columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from base.errors import UsageError
from envs.cohorts import AGE_BANDS, COHORTS, age_band, load_cohort

EXPECTED = {  # (rows, label rate range, sensitive groups) from the shipped files
    "actg175": (2139, (0.2, 0.3), {"race": {"white", "non-white"}, "gender": {"male", "female"}}),
    "support2": (9105, (0.6, 0.75), {"race": {"white", "black", "hispanic", "other", "asian",
                                              "missing"}, "sex": {"male", "female"}}),
    "kidney": (863, (0.1, 0.25), {"race": {"black", "white"}, "sex": {"male", "female"}}),
}


@pytest.mark.parametrize("name", sorted(COHORTS))
def test_cohort_columns_match_spec(name):
    spec = COHORTS[name]
    df = load_cohort(name)
    rows, (lo, hi), groups = EXPECTED[name]
    assert list(df.columns) == spec["features"] + [spec["label"]] + spec["sensitive"] + spec["extra"]
    assert len(df) == rows
    assert set(np.unique(df[spec["label"]])) == {0, 1}
    assert lo < df[spec["label"]].mean() < hi
    feats = df[spec["features"]].to_numpy()
    assert feats.dtype == np.float64 and np.isfinite(feats).all()
    for col, values in groups.items():
        assert col in spec["sensitive"]
        assert set(df[col]) == values
    assert set(df["age_band"]) <= set(AGE_BANDS)
    assert spec["label"] not in spec["features"]
    assert not set(spec["sensitive"]) & set(spec["features"])


def test_actg175_decoding_matches_raw_file():
    from pathlib import Path

    import lifelines.datasets

    raw = pd.read_csv(Path(lifelines.datasets.__file__).parent / "ACTG175.csv")
    df = load_cohort("actg175")
    assert (df["race"] == "non-white").sum() == (raw["race"] == 1).sum()
    assert (df["gender"] == "male").sum() == (raw["gender"] == 1).sum()
    np.testing.assert_array_equal(df["cens"], raw["cens"])
    for leak in ("days", "cd420", "cd496", "cd820", "offtrt", "r"):
        assert leak not in COHORTS["actg175"]["features"]


def test_kidney_intersections_match_indicator_columns():
    from lifelines.datasets import load_kidney_transplant

    raw = load_kidney_transplant()
    df = load_cohort("kidney")
    counts = df.groupby(["race", "sex"]).size().to_dict()
    assert counts[("black", "male")] == raw["black_male"].sum()
    assert counts[("white", "male")] == raw["white_male"].sum()
    assert counts[("black", "female")] == raw["black_female"].sum()
    assert counts[("white", "female")] == len(raw) - raw[["black_male", "white_male",
                                                             "black_female"]].to_numpy().sum()


def test_age_band_edges():
    s = age_band(pd.Series([0, 25, 25.5, 50, 51, 75, 75.1, 99]))
    assert list(s) == ["<=25", "<=25", "26-50", "26-50", "51-75", "51-75", ">75", ">75"]


def test_unknown_cohort_lists_names():
    with pytest.raises(UsageError) as exc:
        load_cohort("mimic")
    msg = str(exc.value)
    assert "mimic" in msg
    for name in COHORTS:
        assert name in msg


@pytest.mark.parametrize("name,sensitive", [("actg175", "gender"), ("kidney", None)])
def test_preference_items_are_arrays_with_the_group_one_hot(name, sensitive):
    from envs.cohorts import preference_items

    items = preference_items(name, sensitive)
    x, groups, good = items["x"], items["groups"], items["good"]
    assert x.shape == (len(load_cohort(name)), len(items["feature_names"]))
    assert np.isfinite(x).all() and set(np.unique(good)) == {0, 1}
    block = x[:, list(items["cf_columns"])]
    np.testing.assert_array_equal(block.argmax(1), groups)  # one-hot of the group codes
    assert (block.sum(1) == 1).all()
    column = sensitive or COHORTS[name]["sensitive"][0]
    assert set(items["group_names"]) == EXPECTED[name][2][column]
    with pytest.raises(UsageError, match="unknown cohort"):
        preference_items("mimic")
