"""Schema validation, group keys and image loading of envs.clinical.dataset."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from base.errors import UsageError
from envs.clinical.dataset import (
    age_band,
    group_keys,
    load_dataset,
    load_image,
    save_dataset,
    validate,
)


def png(color=(200, 10, 10), size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def frame(n=6, **overrides) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows.append({
            "id": f"s{i}", "image": png((10 * i, 0, 0)), "image_path": None, "modality": "xray",
            "data_source": "src", "question": "Which?", "options": ["yes", "no"],
            "answer": "yes" if i % 2 else "no", "sex": "FM"[i % 2], "age": 20.0 + 15 * i,
            "race": "white", "split": ("train", "val", "test")[i % 3],
        })
    df = pd.DataFrame(rows)
    for k, v in overrides.items():
        df[k] = v
    return df


def test_roundtrip_keeps_rows_types_and_extra_columns(tmp_path):
    df = frame()
    df["fitzpatrick"] = ["1", None, "3", "4", "5", "6"]
    save_dataset(df, tmp_path / "d.parquet")
    out = load_dataset(tmp_path / "d.parquet")
    assert list(out["id"]) == list(df["id"])
    assert out["options"].iloc[0] == ["yes", "no"]
    assert out["age"].dtype == np.float64
    assert out["fitzpatrick"].iloc[1] is None and out["fitzpatrick"].iloc[2] == "3"
    assert load_image(out.iloc[3]).getpixel((0, 0)) == (30, 0, 0)
    train = load_dataset(tmp_path, split="train")
    assert list(train["id"]) == ["s0", "s3"]


@pytest.mark.parametrize("column", ["id", "question", "options", "answer", "split", "modality"])
def test_missing_required_column_is_named(column):
    with pytest.raises(UsageError, match=f"missing required column.*'{column}'"):
        validate(frame().drop(columns=[column]))


def test_missing_both_image_columns():
    with pytest.raises(UsageError, match="'image' or 'image_path'"):
        validate(frame().drop(columns=["image", "image_path"]))


@pytest.mark.parametrize("column,value,message", [
    ("age", "forty", "row 2 \\(id 's2'\\), column 'age': expected a number"),
    ("age", 300.0, "row 2 .*column 'age': .*outside"),
    ("sex", "female", "row 2 .*column 'sex': 'female' is not one of \\['F', 'M'\\]"),
    ("id", 7, "row 2, column 'id': expected a string"),
    ("options", "yes,no", "row 2 .*column 'options': expected a list of strings"),
    ("answer", "maybe", "row 2 .*column 'answer': 'maybe' is not one of the options"),
    ("split", "dev", "row 2 .*column 'split': 'dev' is not one of"),
    ("image", "notbytes", "row 2 .*column 'image': expected image bytes"),
])
def test_wrong_value_names_row_and_column(column, value, message):
    df = frame()
    df[column] = df[column].astype(object)
    df.at[2, column] = value
    with pytest.raises(UsageError, match=message):
        validate(df)


def test_corrupt_image_bytes_name_the_row(tmp_path):
    df = frame()
    df.at[4, "image"] = png()[:20] + b"garbage" * 5
    with pytest.raises(UsageError, match="row 4 \\(id 's4'\\), column 'image': corrupt image"):
        validate(df)
    # unchecked load, then loading the image itself names the sample
    loaded = validate(df, check_images=False)
    with pytest.raises(UsageError, match="sample id 's4': corrupt"):
        load_image(loaded.iloc[4])


def test_image_paths_resolve_relative_to_the_parquet_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png((1, 2, 3)))
    df = frame(3)
    df["image"] = None
    df["image_path"] = "img/a.png"
    save_dataset(df.assign(image_path=str(tmp_path / "img" / "a.png")), tmp_path / "x.parquet")
    import pyarrow.parquet as pq
    t = pq.read_table(tmp_path / "x.parquet").to_pandas()
    t["image_path"] = "img/a.png"
    t.to_parquet(tmp_path / "x.parquet")
    out = load_dataset(tmp_path / "x.parquet")
    assert out["image_path"].iloc[0] == str((tmp_path / "img" / "a.png").resolve())
    assert load_image(out.iloc[0]).getpixel((0, 0)) == (1, 2, 3)
    t["image_path"] = "img/missing.png"
    t.to_parquet(tmp_path / "x.parquet")
    with pytest.raises(UsageError, match="row 0 .*'image_path': file not found"):
        load_dataset(tmp_path / "x.parquet")


def test_empty_split_and_bad_split_name(tmp_path):
    save_dataset(frame().assign(split="train"), tmp_path / "d.parquet")
    with pytest.raises(UsageError, match="split 'test' is empty.*'train': 6"):
        load_dataset(tmp_path / "d.parquet", split="test")
    with pytest.raises(UsageError, match="split 'dev' is not one of"):
        load_dataset(tmp_path / "d.parquet", split="dev")
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="bad.parquet: not a readable parquet"):
        load_dataset(tmp_path)


def test_duplicate_ids_across_files(tmp_path):
    save_dataset(frame(), tmp_path / "a.parquet")
    save_dataset(frame(), tmp_path / "b.parquet")
    with pytest.raises(UsageError, match="id 's0' appears in more than one file"):
        load_dataset(tmp_path)


def test_save_is_atomic_on_bad_data(tmp_path):
    bad = frame()
    bad.at[1, "answer"] = "maybe"
    with pytest.raises(UsageError):
        save_dataset(bad, tmp_path / "d.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("age,band", [(0, "<=25"), (25, "<=25"), (25.5, "26-50"), (26, "26-50"),
                                      (50, "26-50"), (51, "51-75"), (75, "51-75"), (76, ">75"),
                                      (None, None), (math.nan, None)])
def test_age_bands(age, band):
    assert age_band(age) == band


def test_group_keys_default_configurable_and_unknown():
    df = pd.DataFrame({"sex": ["F", "M", None, "F", "M"], "age": [30, 80, 40, np.nan, 20],
                       "race": ["asian", None, "white", "black", "white"]})
    assert list(group_keys(df)) == ["F|26-50", "M|>75", "unknown", "unknown", "M|<=25"]
    assert list(group_keys(df, ("race",))) == ["asian", "unknown", "white", "black", "white"]
    assert list(group_keys(df, ["sex", "race"])) == ["F|asian", "unknown", "unknown", "F|black",
                                                      "M|white"]
    assert list(group_keys({"sex": "M", "age": 51.0})) == ["M|51-75"]
    with pytest.raises(UsageError, match="'ethnicity' is not a column; choose from"):
        group_keys(df, ["sex", "ethnicity"])
