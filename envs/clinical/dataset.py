"""The Parquet schema for clinical VQA samples, its validation, group keys and image loading.

One row = one multiple-choice question about one image:

=============  ===============  ========  ==================================================
column         type             nullable  meaning
=============  ===============  ========  ==================================================
id             string           no        unique sample id
image          binary           yes       encoded image bytes (PNG/JPEG/...)
image_path     string           yes       local image file (absolute, or relative to the
                                          parquet file's folder); one of image/image_path
modality       string           no        e.g. "xray", "dermoscopy", "mammography"
data_source    string           no        dataset name, e.g. "chexpert" (FairGRPO's d)
question       string           no        the question text
options        list<string>     no        >= 2 distinct answer options
answer         string           no        one of ``options``
sex            string           yes       "F" or "M"
age            float            yes       years
race           string           yes       free text
split          string           no        "train", "val" or "test"
=============  ===============  ========  ==================================================

Any other column is kept as an extra demographic attribute (nullable; e.g. ``fitzpatrick``).
``load_dataset`` validates all of this and raises ``UsageError`` naming the row and column, so
bad data fails before training, never deep inside it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from base.errors import UsageError

SPLITS = ("train", "val", "test")
SEXES = ("F", "M")
UNKNOWN = "unknown"
REQUIRED_COLUMNS = ("id", "modality", "data_source", "question", "options", "answer", "split")
IMAGE_COLUMNS = ("image", "image_path")
DEMOGRAPHIC_COLUMNS = ("sex", "age", "race")
COLUMNS = ("id", "image", "image_path", "modality", "data_source", "question", "options",
           "answer", "sex", "age", "race", "split")
#: Age bands of the FairGRPO paper: <=25, 26-50, 51-75, >75 (upper bounds inclusive).
AGE_BANDS = (("<=25", 25.0), ("26-50", 50.0), ("51-75", 75.0), (">75", math.inf))
DEFAULT_GROUP_ATTRIBUTES = ("sex", "age_band")


def arrow_schema(extra: Sequence[str] = ()):
    """The pyarrow schema of the standard columns (+ ``extra`` string attribute columns)."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("image_path", pa.string()),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("data_source", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("sex", pa.string()),
        pa.field("age", pa.float64()),
        pa.field("race", pa.string()),
        pa.field("split", pa.string(), nullable=False),
    ]
    fields += [pa.field(name, pa.string()) for name in extra]
    return pa.schema(fields)


# ---------------------------------------------------------------------------------- validation

def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def _where(df: pd.DataFrame, i: int) -> str:
    ident = df["id"].iloc[i] if "id" in df.columns else None
    return f"row {i}" + (f" (id {ident!r})" if isinstance(ident, str) else "")


def _bad(df: pd.DataFrame, i: int, column: str, message: str, origin: str) -> UsageError:
    return UsageError(f"{origin}: {_where(df, i)}, column {column!r}: {message}")


def _check_strings(df: pd.DataFrame, column: str, nullable: bool, origin: str) -> None:
    for i, v in enumerate(df[column].tolist()):
        if _missing(v):
            if not nullable:
                raise _bad(df, i, column, "is missing (null); a non-empty string is required",
                           origin)
        elif not isinstance(v, str):
            raise _bad(df, i, column, f"expected a string, got {type(v).__name__} {v!r}", origin)
        elif not nullable and not v.strip():
            raise _bad(df, i, column, "is an empty string", origin)


def validate(df: pd.DataFrame, origin: str = "dataset", check_images: bool = True) -> pd.DataFrame:
    """Check ``df`` against the schema; return a normalized copy (all columns present).

    Raises ``UsageError("<origin>: row 3 (id 'x'), column 'answer': ...")`` on the first problem.
    ``check_images`` also verifies embedded image bytes (PIL ``verify``) and that image files
    exist (files are fully decoded only by ``load_image``).
    """
    if not isinstance(df, pd.DataFrame):
        raise UsageError(f"{origin}: expected a table, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UsageError(f"{origin}: missing required column(s) {missing}; "
                         f"required: {list(REQUIRED_COLUMNS)}, found: {list(df.columns)}")
    if not any(c in df.columns for c in IMAGE_COLUMNS):
        raise UsageError(f"{origin}: missing column 'image' or 'image_path' (one is required); "
                         f"found: {list(df.columns)}")
    df = df.reset_index(drop=True).copy()
    for c in ("image", "image_path", *DEMOGRAPHIC_COLUMNS):
        if c not in df.columns:
            df[c] = None
    if len(df) == 0:
        raise UsageError(f"{origin}: the dataset has no rows")

    for c in ("id", "modality", "data_source", "question", "answer", "split"):
        _check_strings(df, c, nullable=False, origin=origin)
    for c in ("image_path", "sex", "race"):
        _check_strings(df, c, nullable=True, origin=origin)
    dup = df["id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise _bad(df, i, "id", "duplicate id (ids must be unique)", origin)

    options_col = []
    for i, (opts, ans) in enumerate(zip(df["options"].tolist(), df["answer"].tolist())):
        if isinstance(opts, np.ndarray):
            opts = opts.tolist()
        if not isinstance(opts, (list, tuple)) or not all(isinstance(o, str) for o in opts):
            raise _bad(df, i, "options", f"expected a list of strings, got {opts!r:.80}", origin)
        if len(opts) < 2 or len(set(opts)) != len(opts):
            raise _bad(df, i, "options", f"need >= 2 distinct options, got {list(opts)!r:.80}",
                       origin)
        if ans not in opts:
            raise _bad(df, i, "answer", f"{ans!r} is not one of the options {list(opts)}", origin)
        options_col.append(list(opts))
    df["options"] = options_col

    for i, s in enumerate(df["split"].tolist()):
        if s not in SPLITS:
            raise _bad(df, i, "split", f"{s!r} is not one of {list(SPLITS)}", origin)
    for i, s in enumerate(df["sex"].tolist()):
        if not _missing(s) and s not in SEXES:
            raise _bad(df, i, "sex", f"{s!r} is not one of {list(SEXES)} (or null)", origin)
    ages = []
    for i, a in enumerate(df["age"].tolist()):
        if _missing(a):
            ages.append(np.nan)
        elif isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.number)):
            raise _bad(df, i, "age", f"expected a number (years) or null, got {a!r}", origin)
        elif not 0 <= float(a) <= 150:
            raise _bad(df, i, "age", f"{a!r} is outside 0..150 years", origin)
        else:
            ages.append(float(a))
    df["age"] = np.asarray(ages, dtype=np.float64)

    base = Path(origin).parent if Path(origin).suffix == ".parquet" else None
    images, paths = df["image"].tolist(), df["image_path"].tolist()
    for i, (img, p) in enumerate(zip(images, paths)):
        if _missing(img) and _missing(p):
            raise _bad(df, i, "image", "both 'image' and 'image_path' are null; one is required",
                       origin)
        if not _missing(img) and not isinstance(img, (bytes, bytearray, memoryview)):
            raise _bad(df, i, "image", f"expected image bytes, got {type(img).__name__}", origin)
        if not _missing(p) and base is not None and not Path(p).is_absolute():
            paths[i] = str((base / p).resolve())
    df["image_path"] = paths
    if check_images:
        for i in range(len(df)):
            row = df.iloc[i]
            if not _missing(row["image"]):
                _verify_bytes(bytes(row["image"]), lambda m, i=i: _bad(df, i, "image", m, origin))
            elif not Path(row["image_path"]).is_file():
                raise _bad(df, i, "image_path", f"file not found: {row['image_path']}", origin)
    return df


def _verify_bytes(data: bytes, error) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001 (PIL raises many types for bad data)
        raise error(f"corrupt image bytes ({len(data)} bytes): {type(exc).__name__}: {exc}") \
            from None


# ------------------------------------------------------------------------------------- loading

def parquet_files(path: str | Path) -> list[Path]:
    """``path`` itself if a file, else the sorted ``*.parquet`` files in the folder."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise UsageError(f"data: no *.parquet files in folder {p}")
        return files
    raise UsageError(f"data: {p} does not exist (expected a .parquet file or a folder of them)")


def load_dataset(path: str | Path, split: str | None = None,
                 check_images: bool = True) -> pd.DataFrame:
    """Read and validate a parquet file or a folder of them; optionally keep one split.

    Returns one row per sample with all ``COLUMNS`` (+ extra attribute columns), ``options`` as
    Python lists, ``age`` as float (NaN = missing), ``image_path`` absolute. Raises
    ``UsageError`` naming the file, row and column on bad data, or the split if it is empty.
    """
    import pyarrow.parquet as pq

    if split is not None and split not in SPLITS:
        raise UsageError(f"split {split!r} is not one of {list(SPLITS)}")
    frames = []
    for f in parquet_files(path):
        try:
            table = pq.read_table(f)
        except Exception as exc:  # noqa: BLE001 (any reader failure is bad input)
            raise UsageError(f"{f}: not a readable parquet file ({type(exc).__name__}: {exc})") \
                from None
        frames.append(validate(table.to_pandas(), origin=str(f), check_images=check_images))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1 and df["id"].duplicated().any():
        dup = df["id"][df["id"].duplicated()].iloc[0]
        raise UsageError(f"data {path}: id {dup!r} appears in more than one file")
    if split is not None:
        counts = df["split"].value_counts().to_dict()
        df = df[df["split"] == split].reset_index(drop=True)
        if len(df) == 0:
            raise UsageError(f"data {path}: split {split!r} is empty (rows per split: {counts})")
    return df


def save_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate ``df`` and write it as one parquet file, atomically (temp file + rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    df = validate(df, origin=str(path), check_images=True)
    extra = [c for c in df.columns if c not in COLUMNS]
    for c in extra:
        df[c] = [None if _missing(v) else str(v) for v in df[c].tolist()]
    df["image"] = [None if _missing(v) else bytes(v) for v in df["image"].tolist()]
    table = pa.Table.from_pandas(df[list(COLUMNS) + extra], schema=arrow_schema(extra),
                                 preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------- group keys

def age_band(age: Any) -> str | None:
    """Age in years -> "<=25" | "26-50" | "51-75" | ">75"; None if missing."""
    if _missing(age):
        return None
    a = float(age)
    for name, upper in AGE_BANDS:
        if a <= upper:
            return name
    return None


def group_keys(df: pd.DataFrame | Mapping[str, Any],
               attributes: Sequence[str] = DEFAULT_GROUP_ATTRIBUTES) -> pd.Series:
    """Intersectional group key per row, e.g. "F|26-50"; "unknown" if any attribute is missing.

    ``attributes`` are column names, plus the derived ``age_band`` (from ``age``). Shape: a
    string Series aligned with ``df`` (a single row dict gives a one-element Series).
    """
    if isinstance(df, Mapping):
        df = pd.DataFrame([dict(df)])
    if isinstance(attributes, str):
        attributes = (attributes,)
    if not attributes:
        raise UsageError("group attributes: need at least one attribute, e.g. ['sex', 'age_band']")
    cols = []
    for attr in attributes:
        if attr == "age_band":
            if "age" not in df.columns:
                raise UsageError("group attribute 'age_band' needs column 'age'; "
                                 f"columns: {list(df.columns)}")
            cols.append([age_band(a) for a in df["age"].tolist()])
        elif attr in df.columns:
            cols.append([None if _missing(v) else str(v) for v in df[attr].tolist()])
        else:
            raise UsageError(f"group attribute {attr!r} is not a column; choose from "
                             f"{sorted(set(df.columns) | {'age_band'})}")
    keys = [UNKNOWN if any(v is None for v in vals) else "|".join(vals) for vals in zip(*cols)]
    return pd.Series(keys, index=df.index, dtype=object, name="group")


# -------------------------------------------------------------------------------------- images

def load_image(row: Mapping[str, Any] | pd.Series):
    """The row's image as an RGB ``PIL.Image``; ``UsageError`` naming the row id if unreadable."""
    from PIL import Image

    ident = row.get("id", "?")
    data, path = row.get("image"), row.get("image_path")
    try:
        if not _missing(data) and data is not None:
            im = Image.open(io.BytesIO(bytes(data)))
        elif not _missing(path) and path:
            if str(path).lower().endswith((".dcm", ".dicom")):
                return _load_dicom(path)
            im = Image.open(path)
        else:
            raise UsageError(f"sample id {ident!r}: no image (both 'image' and 'image_path' are "
                             "null)")
        im.load()
        return im.convert("RGB")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 (PIL/OS errors of many types)
        where = "image bytes" if not _missing(data) and data is not None else f"image file {path}"
        raise UsageError(f"sample id {ident!r}: corrupt or unreadable {where} "
                         f"({type(exc).__name__}: {exc})") from None


def _load_dicom(path):
    try:
        import pydicom
    except ImportError:
        raise UsageError(f"{path}: DICOM images need the optional package pydicom "
                         "(pip install pydicom) or convert them to PNG first") from None
    from PIL import Image

    arr = pydicom.dcmread(path).pixel_array.astype(np.float64)
    arr = (arr - arr.min()) / max(float(np.ptp(arr)), 1e-9) * 255.0
    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
