"""The built-in synthetic clinical VQA dataset (the default data of ``platform.train fairgrpo``).

Several data sources, each with its own modality, question and option set. Each image is a
small RGB picture: a modality-specific background texture, plus the label's signal (a
class-specific colour shift of the whole image and a brighter central blob), plus noise:

    image = background(modality) + strength(group) * signal(answer) + colour cast + noise

``strength`` is 1 for ordinary groups and ``hard_strength`` (< 1) for the ``hard_groups``, so
a plain policy learns those groups worse (group-dependent difficulty, as in FairGRPO's
motivation, arXiv 2510.19893). Group sizes are skewed by ``imbalance`` (minority groups are
sampled ``imbalance`` times less often), and a ``missing_rate`` share of rows loses its sex,
its age or both (group key "unknown"). The true group is kept in the ``true_group`` column so
label-free estimators (FairGRPO-ND) can be scored against it. Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from base.errors import UsageError
from envs.clinical.dataset import AGE_BANDS, save_dataset


@dataclass(frozen=True)
class Source:
    """One synthetic data source: its name, modality, question and answer options."""

    name: str
    modality: str
    question: str
    options: tuple[str, ...]
    background: tuple[float, float, float]  # mean RGB of the background, in [0, 1]


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("synth-cxr", "xray", "What is the most likely finding in this chest X-ray?",
           ("no finding", "pneumonia", "pleural effusion"), (0.45, 0.45, 0.45)),
    Source("synth-derm", "dermoscopy", "Is this skin lesion benign or malignant?",
           ("benign", "malignant"), (0.70, 0.50, 0.40)),
    Source("synth-mammo", "mammography", "What is the BI-RADS assessment of this mammogram?",
           ("BI-RADS 1", "BI-RADS 2", "BI-RADS 4"), (0.30, 0.30, 0.30)),
)}
SEXES = ("F", "M")
BANDS = tuple(name for name, _ in AGE_BANDS)
GROUPS = tuple(f"{s}|{b}" for s in SEXES for b in BANDS)
AGE_RANGES = {"<=25": (18, 25), "26-50": (26, 50), "51-75": (51, 75), ">75": (76, 90)}
RACES = ("white", "black", "asian", "hispanic", "other")
#: Default hard (weak-signal) groups: the oldest women and the youngest men.
DEFAULT_HARD_GROUPS = ("F|>75", "M|<=25")
# Class signal directions (RGB offsets), one per option index; far apart so they are separable.
_CLASS_DIRECTIONS = np.array([[0.25, -0.15, -0.15], [-0.15, 0.25, -0.15], [-0.15, -0.15, 0.25],
                              [0.2, 0.2, -0.25], [-0.25, 0.2, 0.2]])


def group_weights(imbalance: float | Mapping[str, float],
                  minority_groups: Sequence[str]) -> dict[str, float]:
    """Sampling weight per true group. A float r: minority groups get 1/r, others 1."""
    if isinstance(imbalance, Mapping):
        unknown = sorted(set(imbalance) - set(GROUPS))
        if unknown:
            raise UsageError(f"imbalance: unknown group(s) {unknown}; groups: {list(GROUPS)}")
        w = {g: float(imbalance.get(g, 1.0)) for g in GROUPS}
    else:
        if not float(imbalance) >= 1.0:
            raise UsageError(f"imbalance: {imbalance!r} must be >= 1 (majority:minority ratio)")
        w = {g: (1.0 / float(imbalance) if g in minority_groups else 1.0) for g in GROUPS}
    if any(not v >= 0 for v in w.values()) or sum(w.values()) <= 0:
        raise UsageError(f"imbalance: weights must be >= 0 and not all 0, got {w}")
    return w


def _render(rng: np.random.Generator, source: Source, label: int, strength: float,
            size: int, noise: float, jitter: float) -> bytes:
    """One PNG image (size x size RGB) whose colour pattern encodes ``label``."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    texture = 0.08 * np.sin(2 * np.pi * (xx * rng.uniform(1, 3) + yy * rng.uniform(1, 3)))
    img = np.asarray(source.background)[None, None, :] + texture[..., None]
    direction = _CLASS_DIRECTIONS[label % len(_CLASS_DIRECTIONS)]
    r2 = (xx - rng.uniform(0.35, 0.65)) ** 2 + (yy - rng.uniform(0.35, 0.65)) ** 2
    blob = np.exp(-r2 / (2 * 0.15 ** 2))[..., None]
    img = img + strength * direction[None, None, :] * (0.6 + 0.8 * blob)
    img = img + rng.normal(0.0, jitter, size=3)[None, None, :]  # per-image colour cast
    img = img + rng.normal(0.0, noise, size=img.shape)
    arr = (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def make_synthetic(n_per_source: int = 120, sources: Sequence[str] | None = None,
                   image_size: int = 32, imbalance: float | Mapping[str, float] = 3.0,
                   missing_rate: float = 0.1, hard_groups: Sequence[str] = DEFAULT_HARD_GROUPS,
                   minority_groups: Sequence[str] | None = None, hard_strength: float = 0.3,
                   noise: float = 0.12, jitter: float = 0.08, split_fractions: tuple[float, float, float] =
                   (0.6, 0.2, 0.2), seed: int = 0) -> pd.DataFrame:
    """The synthetic dataset as a DataFrame in the schema of ``envs.clinical.dataset``.

    ``n_per_source`` rows per source (``sources`` default: all of ``SOURCES``). Groups in
    ``minority_groups`` (default: ``hard_groups``) are sampled ``imbalance`` times less often
    (or pass ``{group: weight}``). Hard groups' label signal is scaled by ``hard_strength``.
    ``noise`` is per-pixel noise, ``jitter`` a per-image colour cast (what makes weak signals
    hard to read). ``missing_rate`` of rows lose sex and/or age. Extra column ``true_group`` holds the
    unmasked group key. Same arguments -> identical frame.
    """
    sources = list(SOURCES) if sources is None else list(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise UsageError(f"sources: unknown {unknown or sources}; choose from {list(SOURCES)}")
    bad_groups = sorted(set(hard_groups) - set(GROUPS))
    if bad_groups:
        raise UsageError(f"hard_groups: unknown group(s) {bad_groups}; groups: {list(GROUPS)}")
    if not 0.0 <= missing_rate <= 1.0:
        raise UsageError(f"missing_rate: {missing_rate!r} must be within [0, 1]")
    if int(n_per_source) < 3:
        raise UsageError(f"n_per_source: {n_per_source!r} must be >= 3 (one row per split)")
    if not 8 <= int(image_size) <= 512:
        raise UsageError(f"image_size: {image_size!r} must be within 8..512 pixels")
    if not 0.0 <= hard_strength <= 1.0:
        raise UsageError(f"hard_strength: {hard_strength!r} must be within [0, 1]")
    if int(seed) < 0:
        raise UsageError(f"seed: {seed!r} must be >= 0")
    fr = np.asarray(split_fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise UsageError(f"split_fractions: {split_fractions!r} must be 3 shares summing to 1")
    minority = hard_groups if minority_groups is None else minority_groups
    bad_groups = sorted(set(minority) - set(GROUPS))
    if bad_groups:
        raise UsageError(f"minority_groups: unknown group(s) {bad_groups}; groups: {list(GROUPS)}")
    weights = group_weights(imbalance, minority)
    p = np.array([weights[g] for g in GROUPS])
    p = p / p.sum()

    rows = []
    for s_idx, name in enumerate(sources):
        src = SOURCES[name]
        rng = np.random.default_rng([seed, s_idx, 7919])
        groups = rng.choice(len(GROUPS), size=n_per_source, p=p)
        labels = rng.integers(0, len(src.options), size=n_per_source)
        split_idx = _split_indices(rng, n_per_source, fr)
        for i in range(n_per_source):
            group = GROUPS[groups[i]]
            sex, band = group.split("|")
            lo, hi = AGE_RANGES[band]
            age, race = float(rng.integers(lo, hi + 1)), str(rng.choice(RACES))
            strength = hard_strength if group in hard_groups else 1.0
            image = _render(rng, src, int(labels[i]), strength, int(image_size), noise, jitter)
            masked_sex, masked_age = sex, age
            if rng.random() < missing_rate:
                what = rng.integers(0, 3)  # 0: sex, 1: age, 2: both
                masked_sex = None if what in (0, 2) else sex
                masked_age = None if what in (1, 2) else age
            rows.append({
                "id": f"{name}-{i:05d}", "image": image, "image_path": None,
                "modality": src.modality, "data_source": name, "question": src.question,
                "options": list(src.options), "answer": src.options[labels[i]],
                "sex": masked_sex, "age": masked_age, "race": race,
                "split": ("train", "val", "test")[split_idx[i]], "true_group": group,
            })
    return pd.DataFrame(rows)


def _split_indices(rng: np.random.Generator, n: int, fractions: np.ndarray) -> np.ndarray:
    """0/1/2 (train/val/test) per row, each split non-empty when its share is > 0."""
    counts = np.floor(fractions * n).astype(int)
    counts[0] += n - counts.sum()
    for k in (1, 2):
        if fractions[k] > 0 and counts[k] == 0:
            counts[k], counts[0] = 1, counts[0] - 1
    return rng.permutation(np.repeat(np.arange(3), counts))


def write_synthetic(out_dir: str | Path, **kw) -> Path:
    """Write ``make_synthetic(**kw)`` to ``out_dir/data.parquet`` (+ ``synth.json``); return dir.

    Written atomically: a folder that exists afterwards is complete.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    df = make_synthetic(**kw)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, (tuple, list))
                else v) for k, v in kw.items()}
    save_dataset(df, out / "data.parquet")
    tmp = out / ".synth.json.tmp"
    tmp.write_text(json.dumps({"generator": "envs.clinical.synth.make_synthetic",
                               "kwargs": meta, "rows": len(df)}, indent=2, sort_keys=True))
    tmp.replace(out / "synth.json")
    return out


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def sft_subset(df: pd.DataFrame, keep: float, hard_groups: Sequence[str] = DEFAULT_HARD_GROUPS,
               seed: int = 0) -> pd.DataFrame:
    """The dataset with only a ``keep`` share of the hard groups' *training* rows (by
    ``true_group``): supervised warm-start data that under-represents them, as clinical
    training data does. Validation and test rows are unchanged, so a model trained on it is
    scored on the same held-out rows as the RL runs that start from it."""
    if not 0.0 <= keep <= 1.0:
        raise UsageError(f"keep: {keep!r} must be within [0, 1]")
    rng = np.random.default_rng([seed, 4242])
    drop = ((df["split"] == "train") & df["true_group"].isin(list(hard_groups))
            & (rng.random(len(df)) >= keep)).to_numpy()
    return df[~drop].reset_index(drop=True)


def benchmark_datasets(sft_keep: float, **kw) -> tuple[Path, Path]:
    """``(rl, sft)`` dataset folders of the clinical benchmark: ``make_synthetic(**kw)``, and
    the same with :func:`sft_subset` (``sft_keep`` of the hard groups' training rows). Cached
    like :func:`default_dataset_path`."""
    from envs.clinical.dataset import load_dataset

    rl = default_dataset_path(**kw)

    def build(tmp: Path) -> None:
        hard = kw.get("hard_groups", DEFAULT_HARD_GROUPS)
        save_dataset(sft_subset(load_dataset(rl), sft_keep, hard, kw.get("seed", 0)),
                     tmp / "data.parquet")

    return rl, _cached({**kw, "sft_keep": sft_keep}, "sft", build)


def default_dataset_path(**kw) -> Path:
    """The built-in default dataset folder, created once under ``<repo>/.cache/clinical-synth/``.

    Keyed by a hash of ``kw`` (empty = the defaults) so different settings never collide.
    Safe to call from several processes at once (build in a temp folder, then rename).
    """
    return _cached(kw, "default", lambda tmp: write_synthetic(tmp, **kw))


def _cached(key_args: dict, prefix: str, build) -> Path:
    """``<cache>/clinical-synth/<prefix>-<hash of key_args>``, built once by ``build(tmp)``."""
    key = hashlib.sha256(json.dumps(key_args, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = Path(os.environ.get("EQUIRL_CACHE", repo_root() / ".cache")) / "clinical-synth"
    final = root / f"{prefix}-{key}"
    if (final / "data.parquet").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process won the race; its copy is identical
            if not (final / "data.parquet").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
