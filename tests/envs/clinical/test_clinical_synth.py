"""The built-in synthetic dataset: determinism, imbalance, missingness, group-dependent difficulty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from base.errors import UsageError
from envs.clinical.dataset import group_keys, load_dataset, load_image, validate
from envs.clinical.synth import (
    DEFAULT_HARD_GROUPS,
    GROUPS,
    SOURCES,
    default_dataset_path,
    make_synthetic,
    write_synthetic,
)


def test_default_is_small_valid_multisource_and_deterministic():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(make_synthetic(seed=4))
    assert 200 <= len(a) <= 600
    validate(a)
    assert set(a["data_source"]) == set(SOURCES) and a["modality"].nunique() == len(SOURCES)
    assert set(a["split"]) == {"train", "val", "test"}
    for _, g in a.groupby("data_source"):
        assert g["answer"].nunique() == len(g["options"].iloc[0])


def test_imbalance_and_missing_rate_are_controllable():
    kw = {"n_per_source": 600, "sources": ["synth-derm"], "image_size": 8}
    bal = make_synthetic(imbalance=1.0, missing_rate=0.0, **kw)
    skew = make_synthetic(imbalance=8.0, missing_rate=0.3, **kw)
    frac_bal = bal["true_group"].isin(DEFAULT_HARD_GROUPS).mean()
    frac_skew = skew["true_group"].isin(DEFAULT_HARD_GROUPS).mean()
    assert abs(frac_bal - 2 / 8) < 0.05          # 2 of 8 groups, equal weights
    assert abs(frac_skew - (2 / 8) / (6 + 2 / 8)) < 0.03
    assert (group_keys(bal) == bal["true_group"]).all()
    unknown = (group_keys(skew) == "unknown").mean()
    assert 0.25 < unknown < 0.35
    custom = make_synthetic(imbalance={"F|<=25": 0.0}, missing_rate=0.0,
                            **{**kw, "n_per_source": 200})
    assert "F|<=25" not in set(custom["true_group"]) and custom["true_group"].nunique() == 7


def _centroid_accuracy(df: pd.DataFrame) -> pd.Series:
    """Nearest-class-centroid on mean image colour, per source; accuracy of hard vs other rows."""
    feats = np.stack([np.asarray(load_image(r), dtype=float).reshape(-1, 3).mean(0)
                      for r in df.to_dict("records")])
    ok = np.zeros(len(df), dtype=bool)
    for _, g in df.groupby("data_source"):
        tr = g.index[g["split"] == "train"]
        te = g.index[g["split"] != "train"]
        answers = sorted(set(g["answer"]))
        cents = np.stack([feats[tr][df.loc[tr, "answer"].to_numpy() == a].mean(0)
                          for a in answers])
        pred = np.argmin(((feats[te][:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
        ok[te] = np.array(answers)[pred] == df.loc[te, "answer"].to_numpy()
    held = df["split"] != "train"
    hard = df["true_group"].isin(DEFAULT_HARD_GROUPS)
    return pd.Series({"hard": ok[held & hard].mean(), "easy": ok[held & ~hard].mean()})


def test_label_signal_is_learnable_and_weaker_for_hard_groups():
    df = make_synthetic(n_per_source=200, imbalance=1.0, missing_rate=0.0, image_size=12)
    acc = _centroid_accuracy(df)
    assert acc["easy"] > 0.9, acc
    assert acc["hard"] < acc["easy"] - 0.2, acc
    same = make_synthetic(n_per_source=200, imbalance=1.0, missing_rate=0.0, image_size=12,
                          hard_strength=1.0)
    acc_same = _centroid_accuracy(same)
    assert acc_same["hard"] > 0.85, acc_same


@pytest.mark.parametrize("kw,message", [
    ({"sources": ["mri"]}, "sources: unknown"),
    ({"hard_groups": ["X|1"]}, "hard_groups: unknown group"),
    ({"missing_rate": 1.5}, "missing_rate"),
    ({"minority_groups": ["F"]}, "minority_groups: unknown group"),
    ({"imbalance": 0.5}, "imbalance: 0.5 must be >= 1"),
    ({"imbalance": {"Q|1": 2.0}}, "imbalance: unknown group"),
    ({"n_per_source": 1}, "n_per_source"),
])
def test_bad_settings_name_the_field(kw, message):
    with pytest.raises(UsageError, match=message):
        make_synthetic(**kw)


def test_write_and_default_path_are_cached(tmp_path, monkeypatch):
    out = write_synthetic(tmp_path / "ds", n_per_source=10, image_size=8)
    assert len(load_dataset(out)) == 30 and (out / "synth.json").is_file()
    monkeypatch.setenv("EQUIRL_CACHE", str(tmp_path / "cache"))
    p = default_dataset_path(n_per_source=12, image_size=8)
    assert p.parent == tmp_path / "cache" / "clinical-synth"
    mtime = (p / "data.parquet").stat().st_mtime_ns
    assert default_dataset_path(n_per_source=12, image_size=8) == p
    assert (p / "data.parquet").stat().st_mtime_ns == mtime
    assert default_dataset_path(n_per_source=13, image_size=8) != p
    assert [q.name for q in p.parent.iterdir() if q.name.startswith(".build")] == []
    assert len(GROUPS) == 8
