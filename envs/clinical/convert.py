"""Converters from public medical-imaging datasets' metadata layouts to the clinical schema.

``CONVERTERS.get(fmt)(src, image_root=None, embed_images=False, seed=0) -> DataFrame``.
``src`` is the metadata CSV or the dataset folder holding it; images are read from local
paths (searched under ``src``'s folder and ``image_root``). Rows keep ``image_path``
(absolute) unless ``embed_images`` copies the bytes into ``image``.

Splits are made per patient (or lesion/study where that is the only key) by a seeded hash,
so one patient never lands in two splits; a dataset's official test set stays ``test``.
Sex is normalised to "F"/"M" (anything else -> null), ages to years (float).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from base.errors import UsageError
from base.registry import Registry

Converter = Callable[..., pd.DataFrame]
CONVERTERS: Registry = Registry("dataset format")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # train / val / test when a dataset has no official split


# --------------------------------------------------------------------------------------- helpers

def find_csv(src: Path, patterns: Sequence[str], what: str) -> Path:
    """``src`` if it is a file, else the first file in folder ``src`` matching a glob pattern."""
    src = Path(src)
    if src.is_file():
        return src
    if not src.is_dir():
        raise UsageError(f"SRC {src} does not exist")
    for pat in patterns:
        hits = sorted(src.glob(pat)) or sorted(src.glob(f"*/{pat}"))
        if hits:
            return hits[0]
    raise UsageError(f"SRC {src}: no {what} found (looked for {list(patterns)})")


def read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 (any parser failure is bad input)
        raise UsageError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UsageError(f"{path}: missing column(s) {missing}; found: {list(df.columns)}")
    if len(df) == 0:
        raise UsageError(f"{path}: no rows")
    return df


def norm_sex(value: Any) -> str | None:
    v = str(value).strip().lower()
    return {"f": "F", "female": "F", "m": "M", "male": "M"}.get(v)


def parse_age(value: Any, path: Path, row: int, column: str) -> float | None:
    """"53", "53.0", "053Y" -> 53.0; "" / "unknown" -> None; other text -> UsageError."""
    v = str(value).strip()
    if v.lower() in ("", "nan", "unknown", "none", "na", "n/a"):
        return None
    m = re.fullmatch(r"0*(\d+(?:\.\d+)?)\s*[Yy]?", v)
    if not m:
        raise UsageError(f"{path}: row {row}, column {column!r}: age {v!r} is not a number")
    return float(m.group(1))


def hash_split(key: str, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """Deterministic split for a patient key: same key + seed -> same split."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    cum = np.cumsum(np.asarray(fractions, dtype=float) / float(np.sum(fractions)))
    return ("train", "val", "test")[int(np.searchsorted(cum, u, side="right"))]


class ImageIndex:
    """Image files under some folders, looked up by file stem (``ISIC_0024306``)."""

    def __init__(self, roots: Iterable[Path]):
        self.by_stem: dict[str, Path] = {}
        for root in roots:
            if root is None or not Path(root).is_dir():
                continue
            for p in sorted(Path(root).rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    self.by_stem.setdefault(p.stem, p.resolve())

    def find(self, stem: str, path: Path, row: int) -> Path:
        stem = Path(str(stem).strip()).stem
        if stem not in self.by_stem:
            raise UsageError(f"{path}: row {row}: image {stem!r} not found under the dataset "
                             "folder or --image-root")
        return self.by_stem[stem]


def resolve_relative(rel: str, roots: Sequence[Path], path: Path, row: int) -> Path:
    """A relative image path from a CSV, tried against each root folder in turn."""
    for root in roots:
        if root is not None and (Path(root) / rel).is_file():
            return (Path(root) / rel).resolve()
    raise UsageError(f"{path}: row {row}: image file {rel!r} not found under "
                     f"{[str(r) for r in roots if r is not None]}")


def finish(rows: list[dict], path: Path, embed_images: bool) -> pd.DataFrame:
    """Rows -> frame in schema order; optionally embed image bytes."""
    if not rows:
        raise UsageError(f"{path}: no usable rows after conversion")
    df = pd.DataFrame(rows)
    if embed_images:
        df["image"] = [Path(p).read_bytes() for p in df["image_path"]]
        df["image_path"] = None
    else:
        df["image"] = None
    for c in ("race",):
        if c not in df.columns:
            df[c] = None
    return df


def _sample(ident, image_path, modality, source, question, options, answer, sex, age, split,
            **extra) -> dict:
    return {"id": ident, "image_path": str(image_path), "modality": modality,
            "data_source": source, "question": question, "options": list(options),
            "answer": answer, "sex": sex, "age": age, "split": split, **extra}


# ------------------------------------------------------------------------------------ CheXpert

CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
                     "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                     "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture")


@CONVERTERS.register("chexpert", help="CheXpert train.csv/valid.csv (Path, Sex, Age, findings)")
def convert_chexpert(src: Path, image_root: Path | None = None, embed_images: bool = False,
                     seed: int = 0) -> pd.DataFrame:
    """CheXpert CSVs -> one question per image with exactly one positive finding (1.0).

    ``train.csv`` rows are split per patient into train/val (7:1); ``valid.csv`` (the
    official hold-out) becomes ``test``. Uncertain (-1) and blank labels count as negative;
    images with no or several positive findings are skipped. Path roots tried: ``image_root``,
    the CSV's folder and its parent (CheXpert paths start with ``CheXpert-v1.0*/``).
    """
    src = Path(src)
    files = [src] if src.is_file() else [p for p in (src / "train.csv", src / "valid.csv",
                                                     src / "test.csv") if p.is_file()]
    if not files:
        raise UsageError(f"SRC {src}: no CheXpert train.csv/valid.csv found")
    rows: list[dict] = []
    for f in files:
        df = read_csv(f, ["Path", "Sex", "Age", *CHEXPERT_FINDINGS])
        official_test = f.stem.lower() in ("valid", "test")
        roots = [image_root, f.parent, f.parent.parent]
        for i, r in enumerate(df.to_dict("records")):
            positive = [k for k in CHEXPERT_FINDINGS if _label(r[k], f, i, k) == 1.0]
            if len(positive) != 1:
                continue
            m = re.search(r"(patient\d+)", r["Path"])
            patient = m.group(1) if m else r["Path"]
            split = "test" if official_test else hash_split(patient, seed, (0.875, 0.125, 0.0))
            race = r.get("PRIMARY_RACE") or r.get("Race") or None
            rows.append(_sample(
                f"chexpert-{f.stem}-{i}", resolve_relative(r["Path"], roots, f, i), "xray",
                "chexpert", "Which finding is present in this chest X-ray?", CHEXPERT_FINDINGS,
                positive[0], norm_sex(r["Sex"]), parse_age(r["Age"], f, i, "Age"), split,
                race=race, view=r.get("Frontal/Lateral") or None))
    return finish(rows, src, embed_images)


def _label(v: str, path: Path, row: int, column: str) -> float | None:
    v = str(v).strip()
    if v == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise UsageError(f"{path}: row {row}, column {column!r}: label {v!r} is not 1, 0, -1 "
                         "or blank") from None


# ----------------------------------------------------------------------------------- HAM10000

HAM_DX = {"akiec": "actinic keratosis", "bcc": "basal cell carcinoma",
          "bkl": "benign keratosis", "df": "dermatofibroma", "mel": "melanoma",
          "nv": "melanocytic nevus", "vasc": "vascular lesion"}


@CONVERTERS.register("ham10000", help="HAM10000_metadata.csv (lesion_id, image_id, dx, age, sex)")
def convert_ham10000(src: Path, image_root: Path | None = None, embed_images: bool = False,
                     seed: int = 0) -> pd.DataFrame:
    """HAM10000 metadata -> 7-way diagnosis question; split per lesion (no patient ids)."""
    f = find_csv(src, ["HAM10000_metadata*.csv", "*metadata*.csv"], "HAM10000 metadata CSV")
    df = read_csv(f, ["lesion_id", "image_id", "dx", "age", "sex"])
    index = ImageIndex([f.parent, image_root])
    rows = []
    for i, r in enumerate(df.to_dict("records")):
        dx = r["dx"].strip().lower()
        if dx not in HAM_DX:
            raise UsageError(f"{f}: row {i}, column 'dx': {r['dx']!r} is not one of "
                             f"{sorted(HAM_DX)}")
        rows.append(_sample(
            f"ham10000-{r['image_id']}", index.find(r["image_id"], f, i), "dermoscopy",
            "ham10000", "What is the diagnosis of this skin lesion?", tuple(HAM_DX.values()),
            HAM_DX[dx], norm_sex(r["sex"]), parse_age(r["age"], f, i, "age"),
            hash_split(r["lesion_id"], seed)))
    return finish(rows, f, embed_images)


# ---------------------------------------------------------------------------------- ISIC-2020

@CONVERTERS.register("isic2020", help="ISIC_2020_Training_GroundTruth.csv (image_name, "
                                      "patient_id, sex, age_approx, benign_malignant)")
def convert_isic2020(src: Path, image_root: Path | None = None, embed_images: bool = False,
                     seed: int = 0) -> pd.DataFrame:
    """ISIC 2020 ground truth -> benign vs malignant question; split per patient."""
    f = find_csv(src, ["ISIC_2020_Training_GroundTruth*.csv", "train*.csv"],
                 "ISIC-2020 ground-truth CSV")
    df = read_csv(f, ["image_name", "patient_id", "sex", "age_approx", "benign_malignant"])
    index = ImageIndex([f.parent, image_root])
    rows = []
    for i, r in enumerate(df.to_dict("records")):
        bm = r["benign_malignant"].strip().lower()
        if bm not in ("benign", "malignant"):
            raise UsageError(f"{f}: row {i}, column 'benign_malignant': {bm!r} is not one of "
                             "['benign', 'malignant']")
        rows.append(_sample(
            f"isic2020-{r['image_name']}", index.find(r["image_name"], f, i), "dermoscopy",
            "isic2020", "Is this skin lesion benign or malignant?", ("benign", "malignant"), bm,
            norm_sex(r["sex"]), parse_age(r["age_approx"], f, i, "age_approx"),
            hash_split(r["patient_id"], seed),
            site=r.get("anatom_site_general_challenge") or None))
    return finish(rows, f, embed_images)


# -------------------------------------------------------------------------------- PAD-UFES-20

PAD_DX = {"ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma",
          "NEV": "nevus", "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis"}


@CONVERTERS.register("pad-ufes-20", help="PAD-UFES-20 metadata.csv (patient_id, img_id, "
                                         "diagnostic, age, gender, fitspatrick)")
def convert_pad_ufes_20(src: Path, image_root: Path | None = None, embed_images: bool = False,
                        seed: int = 0) -> pd.DataFrame:
    """PAD-UFES-20 smartphone photos -> 6-way diagnosis; Fitzpatrick type kept as an attribute."""
    f = find_csv(src, ["metadata.csv", "*metadata*.csv"], "PAD-UFES-20 metadata.csv")
    df = read_csv(f, ["patient_id", "img_id", "diagnostic", "age", "gender"])
    index = ImageIndex([f.parent, image_root])
    rows = []
    for i, r in enumerate(df.to_dict("records")):
        dx = r["diagnostic"].strip().upper()
        if dx not in PAD_DX:
            raise UsageError(f"{f}: row {i}, column 'diagnostic': {r['diagnostic']!r} is not "
                             f"one of {sorted(PAD_DX)}")
        fitz = str(r.get("fitspatrick", "")).strip()
        fitz = None if fitz.lower() in ("", "nan", "unk") else fitz.split(".")[0]
        rows.append(_sample(
            f"pad-ufes-20-{Path(r['img_id']).stem}", index.find(r["img_id"], f, i),
            "clinical photograph", "pad-ufes-20", "What is the diagnosis of this skin lesion?",
            tuple(PAD_DX.values()), PAD_DX[dx], norm_sex(r["gender"]),
            parse_age(r["age"], f, i, "age"), hash_split(r["patient_id"], seed),
            fitzpatrick=fitz))
    return finish(rows, f, embed_images)


# -------------------------------------------------------------------------------- VinDr-Mammo

BIRADS = tuple(f"BI-RADS {k}" for k in range(1, 6))


@CONVERTERS.register("vindr-mammo", help="VinDr-Mammo breast-level_annotations.csv (+ "
                                         "metadata.csv for ages)")
def convert_vindr_mammo(src: Path, image_root: Path | None = None, embed_images: bool = False,
                        seed: int = 0) -> pd.DataFrame:
    """VinDr-Mammo breast-level BI-RADS (1-5) question; official ``test`` split kept.

    Ages come from ``metadata.csv`` ("Patient's Age" like ``053Y``, matched on
    "SOP Instance UID" = image_id) when it sits beside the annotations; sex is "F".
    Images: ``images/<study_id>/<image_id>.*`` (DICOM needs pydicom; PNG works as is).
    """
    f = find_csv(src, ["breast-level_annotations*.csv"], "VinDr-Mammo breast-level_annotations.csv")
    df = read_csv(f, ["study_id", "image_id", "laterality", "view_position", "breast_birads",
                      "split"])
    ages: dict[str, float | None] = {}
    meta = f.parent / "metadata.csv"
    if meta.is_file():
        m = read_csv(meta, ["SOP Instance UID", "Patient's Age"])
        ages = {r["SOP Instance UID"]: parse_age(r["Patient's Age"], meta, j, "Patient's Age")
                for j, r in enumerate(m.to_dict("records"))}
    index = ImageIndex([f.parent, image_root])
    rows = []
    for i, r in enumerate(df.to_dict("records")):
        birads = re.sub(r"\s+", " ", r["breast_birads"].strip()).upper().replace("BI-RADS", "")
        label = f"BI-RADS {birads.strip()}"
        if label not in BIRADS:
            raise UsageError(f"{f}: row {i}, column 'breast_birads': {r['breast_birads']!r} is "
                             f"not one of {list(BIRADS)}")
        official = r["split"].strip().lower()
        if official not in ("training", "train", "test"):
            raise UsageError(f"{f}: row {i}, column 'split': {r['split']!r} is not 'training' "
                             "or 'test'")
        split = "test" if official == "test" else hash_split(r["study_id"], seed,
                                                              (0.875, 0.125, 0.0))
        rows.append(_sample(
            f"vindr-mammo-{r['image_id']}", index.find(r["image_id"], f, i), "mammography",
            "vindr-mammo", f"What is the BI-RADS assessment of this {r['laterality']} "
            f"{r['view_position']} mammogram?", BIRADS, label, "F", ages.get(r["image_id"]),
            split, density=r.get("breast_density") or None))
    return finish(rows, f, embed_images)
