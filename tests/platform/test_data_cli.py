"""``python -m platform.data``: converters on small sample files in each dataset's layout, synth,
check, and the bad-input cases (exit code 2, clear message, nothing written)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from platform.cli import run_main
from platform.data import main

import pandas as pd
import pytest
from PIL import Image

from envs.clinical.dataset import group_keys, load_dataset, load_image


def write_png(path: Path, color=(120, 30, 30), size=6, fmt="PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())


def cli(*argv) -> int:
    return run_main(main, [str(a) for a in argv])


# ---------------------------------------------------------------- sample files in each layout

def chexpert_layout(root: Path) -> Path:
    from envs.clinical.convert import CHEXPERT_FINDINGS

    base = root / "CheXpert-v1.0-small"
    rows = []
    specs = [("train", 1, "Female", "23", "Pneumonia"), ("train", 1, "Female", "23", "Edema"),
             ("train", 2, "Male", "67", "No Finding"), ("train", 3, "Unknown", "", "Fracture"),
             ("train", 4, "Male", "90", None), ("valid", 5, "Female", "45", "Cardiomegaly")]
    for k, (part, pat, sex, age, finding) in enumerate(specs):
        rel = f"CheXpert-v1.0-small/{part}/patient{pat:05d}/study1/view{k}_frontal.jpg"
        write_png(root / rel, (10 * k, 0, 0), fmt="JPEG")
        labels = {f: "" for f in CHEXPERT_FINDINGS}
        if finding:
            labels[finding] = "1.0"
        else:  # two positives and an uncertain one -> skipped
            labels.update({"Edema": "1.0", "Pneumonia": "1.0", "Atelectasis": "-1.0"})
        labels["Lung Opacity"] = labels["Lung Opacity"] or "0.0"
        rows.append({"Path": rel, "Sex": sex, "Age": age, "Frontal/Lateral": "Frontal",
                     "AP/PA": "AP", **labels, "Support Devices": "1.0", "_part": part})
    df = pd.DataFrame(rows)
    for part in ("train", "valid"):
        df[df["_part"] == part].drop(columns="_part").to_csv(base / f"{part}.csv", index=False)
    return base


def ham_layout(root: Path) -> Path:
    rows = [("HAM_0000118", "ISIC_0027419", "bkl", "80.0", "male"),
            ("HAM_0000118", "ISIC_0025030", "bkl", "80.0", "male"),
            ("HAM_0002730", "ISIC_0026769", "mel", "", "female"),
            ("HAM_0001466", "ISIC_0031633", "nv", "75.0", "unknown")]
    for k, (_, img, *_rest) in enumerate(rows):
        write_png(root / f"HAM10000_images_part_{1 + k % 2}" / f"{img}.jpg", (0, 50 * k, 0),
                  fmt="JPEG")
    pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "age", "sex"]).assign(
        dx_type="histo", localization="back").to_csv(root / "HAM10000_metadata.csv", index=False)
    return root / "HAM10000_metadata.csv"


def isic_layout(root: Path) -> Path:
    rows = [("ISIC_2637011", "IP_7279968", "male", "45.0", "head/neck", "unknown", "benign", "0"),
            ("ISIC_0015719", "IP_3075186", "female", "45.0", "upper extremity", "unknown",
             "benign", "0"),
            ("ISIC_0068279", "IP_6890425", "female", "", "", "melanoma", "malignant", "1")]
    for k, r in enumerate(rows):
        write_png(root / "train" / f"{r[0]}.jpg", (0, 0, 60 * k), fmt="JPEG")
    pd.DataFrame(rows, columns=["image_name", "patient_id", "sex", "age_approx",
                                "anatom_site_general_challenge", "diagnosis", "benign_malignant",
                                "target"]).to_csv(root / "ISIC_2020_Training_GroundTruth.csv",
                                                  index=False)
    return root


def pad_layout(root: Path) -> Path:
    rows = [("PAT_1516", "1765", "8", "FEMALE", "3.0", "NEV", "PAT_1516_1765_530.png"),
            ("PAT_46", "881", "55", "MALE", "", "BCC", "PAT_46_881_939.png"),
            ("PAT_1545", "1867", "77", "", "2.0", "ACK", "PAT_1545_1867_547.png")]
    for k, r in enumerate(rows):
        write_png(root / "images" / f"imgs_part_{k + 1}" / r[6], (30 * k, 30, 0))
    pd.DataFrame(rows, columns=["patient_id", "lesion_id", "age", "gender", "fitspatrick",
                                "diagnostic", "img_id"]).assign(smoke="False").to_csv(
        root / "metadata.csv", index=False)
    return root


def vindr_layout(root: Path) -> Path:
    rows = [("s1", "se1", "i1", "L", "CC", "BI-RADS 1", "DENSITY C", "training"),
            ("s1", "se1", "i2", "R", "MLO", "BI-RADS 4", "DENSITY C", "training"),
            ("s2", "se2", "i3", "L", "CC", "BI-RADS 2", "DENSITY B", "test")]
    for k, r in enumerate(rows):
        write_png(root / "images" / r[0] / f"{r[2]}.png", (k * 40, k * 40, k * 40))
    cols = ["study_id", "series_id", "image_id", "laterality", "view_position", "breast_birads",
            "breast_density", "split"]
    pd.DataFrame(rows, columns=cols).assign(height=6, width=6).to_csv(
        root / "breast-level_annotations.csv", index=False)
    pd.DataFrame({"SOP Instance UID": ["i1", "i2", "i3"],
                  "Patient's Age": ["053Y", "053Y", ""]}).to_csv(root / "metadata.csv",
                                                                 index=False)
    return root


LAYOUTS = {"chexpert": chexpert_layout, "ham10000": ham_layout, "isic2020": isic_layout,
           "pad-ufes-20": pad_layout, "vindr-mammo": vindr_layout}

# format -> (rows, {id: (answer, sex, age)}) expected after conversion
EXPECTED = {
    "chexpert": (5, {"chexpert-train-0": ("Pneumonia", "F", 23.0),
                     "chexpert-train-2": ("No Finding", "M", 67.0),
                     "chexpert-train-3": ("Fracture", None, None),
                     "chexpert-valid-0": ("Cardiomegaly", "F", 45.0)}),
    "ham10000": (4, {"ham10000-ISIC_0027419": ("benign keratosis", "M", 80.0),
                     "ham10000-ISIC_0026769": ("melanoma", "F", None),
                     "ham10000-ISIC_0031633": ("melanocytic nevus", None, 75.0)}),
    "isic2020": (3, {"isic2020-ISIC_2637011": ("benign", "M", 45.0),
                     "isic2020-ISIC_0068279": ("malignant", "F", None)}),
    "pad-ufes-20": (3, {"pad-ufes-20-PAT_1516_1765_530": ("nevus", "F", 8.0),
                        "pad-ufes-20-PAT_46_881_939": ("basal cell carcinoma", "M", 55.0),
                        "pad-ufes-20-PAT_1545_1867_547": ("actinic keratosis", None, 77.0)}),
    "vindr-mammo": (3, {"vindr-mammo-i1": ("BI-RADS 1", "F", 53.0),
                        "vindr-mammo-i2": ("BI-RADS 4", "F", 53.0),
                        "vindr-mammo-i3": ("BI-RADS 2", "F", None)}),
}


def _na(v):
    return None if pd.isna(v) else v


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_convert_each_format(fmt, tmp_path, capsys):
    src = LAYOUTS[fmt](tmp_path / "raw")
    assert cli("convert", fmt, src, tmp_path / "out") == 0
    info = json.loads(capsys.readouterr().out)
    df = load_dataset(tmp_path / "out")
    n, expected = EXPECTED[fmt]
    assert len(df) == n == info["rows"]
    by_id = df.set_index("id")
    for ident, (answer, sex, age) in expected.items():
        row = by_id.loc[ident]
        assert row["answer"] == answer and row["answer"] in row["options"]
        assert _na(row["sex"]) == sex and _na(row["age"]) == age
    assert df["image"].isna().all() and df["image_path"].map(lambda p: Path(p).is_file()).all()
    # the images are the ones written for that row (first row's colour differs from the rest)
    assert len({load_image(r).getpixel((2, 2)) for r in df.to_dict("records")}) == len(df)
    keys = group_keys(df)
    assert all(k == "unknown" or k.count("|") == 1 for k in keys)


def test_splits_are_per_patient_and_official_test_is_kept(tmp_path):
    from envs.clinical.convert import hash_split

    assert cli("convert", "chexpert", chexpert_layout(tmp_path / "c"), tmp_path / "c.parquet") == 0
    df = load_dataset(tmp_path / "c.parquet")
    assert df.set_index("id").loc["chexpert-valid-0", "split"] == "test"
    assert set(df[df["id"].str.startswith("chexpert-train")]["split"]) <= {"train", "val"}
    assert cli("convert", "vindr-mammo", vindr_layout(tmp_path / "v"), tmp_path / "v") == 0
    v = load_dataset(tmp_path / "v").set_index("id")
    assert v.loc["vindr-mammo-i3", "split"] == "test"
    assert v.loc["vindr-mammo-i1", "split"] == v.loc["vindr-mammo-i2", "split"] != "test"
    splits = [hash_split(f"p{i}", 0) for i in range(2000)]
    assert abs(splits.count("train") / 2000 - 0.7) < 0.04 and splits.count("test") > 300
    assert [hash_split(f"p{i}", 0) for i in range(50)] == splits[:50]


def test_embed_images_makes_a_self_contained_file(tmp_path):
    src = isic_layout(tmp_path / "raw")
    assert cli("convert", "isic2020", src, tmp_path / "x.parquet", "--embed-images") == 0
    for p in (src / "train").iterdir():
        p.unlink()
    df = load_dataset(tmp_path / "x.parquet")
    assert df["image_path"].isna().all()
    assert load_image(df.iloc[2]).getpixel((1, 1))[2] > 100


@pytest.mark.parametrize("case,message", [
    ("unknown-format", "FORMAT: unknown dataset format 'mimic'; known: chexpert"),
    ("missing-column", "HAM10000_metadata.csv: missing column\\(s\\) \\['dx'\\]"),
    ("bad-label", "row 1, column 'dx': 'xyz' is not one of"),
    ("bad-age", "row 0, column 'age': age 'old' is not a number"),
    ("missing-image", "row 2: image 'ISIC_0026769' not found"),
    ("corrupt-image", "row 3 \\(id 'ham10000-ISIC_0031633'\\), column 'image': corrupt image"),
    ("no-src", "SRC .*nowhere does not exist"),
])
def test_convert_bad_input_exits_2_and_writes_nothing(case, message, tmp_path, capsys):
    src = ham_layout(tmp_path / "raw")
    meta = pd.read_csv(src, dtype=str, keep_default_na=False)
    fmt, extra = "ham10000", []
    if case == "unknown-format":
        fmt = "mimic"
    elif case == "missing-column":
        meta.drop(columns="dx").to_csv(src, index=False)
    elif case == "bad-label":
        meta.at[1, "dx"] = "xyz"
        meta.to_csv(src, index=False)
    elif case == "bad-age":
        meta.at[0, "age"] = "old"
        meta.to_csv(src, index=False)
    elif case == "missing-image":
        next((tmp_path / "raw").rglob("ISIC_0026769.jpg")).unlink()
    elif case == "corrupt-image":
        next((tmp_path / "raw").rglob("ISIC_0031633.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
        extra = ["--embed-images"]
    elif case == "no-src":
        src = tmp_path / "nowhere"
    assert cli("convert", fmt, src, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_synth_and_check(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli("synth", "--out", out, "--n-per-source", "20", "--image-size", "8",
               "--missing-rate", "0.5", "--sources", "synth-cxr", "synth-derm") == 0
    df = load_dataset(out)
    assert len(df) == 40 and set(df["data_source"]) == {"synth-cxr", "synth-derm"}
    assert (group_keys(df) == "unknown").mean() > 0.3
    capsys.readouterr()
    assert cli("check", out, "--split", "val") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == (df["split"] == "val").sum()
    assert sum(report["groups"].values()) == report["rows"]
    assert cli("synth", "--out", tmp_path / "bad", "--missing-rate", "2") == 2
    assert "missing_rate" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert cli("synth", "--out", tmp_path / "bad", "--hard-groups", "X|1") == 2
    assert "hard_groups: unknown group" in capsys.readouterr().err


def test_entry_point_subprocess(tmp_path, run_env, repo_root):
    """The real ``python -m platform.data`` entry point exits 2 with one clear line."""
    from envs.clinical.synth import make_synthetic

    make_synthetic(n_per_source=4, image_size=8).assign(split="train").to_parquet(
        tmp_path / "t.parquet")
    r = subprocess.run([sys.executable, "-m", "platform.data", "check", str(tmp_path / "t.parquet"),
                        "--split", "test"], cwd=repo_root, env=run_env(), capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "split 'test' is empty" in r.stderr
    assert r.stdout == ""
