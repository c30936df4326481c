"""``python -m platform.train fairgrad-classifier``: an MLP on a real cohort, with and without FairGrad.

::

    python -m platform.train fairgrad-classifier --dataset actg175 --sensitive race,gender \\
        [--epochs 30] [--seed 0] [--fairness-loss eo|dp|eo+dp] [--bootstrap 1000] \\
        [--tracking-uri URI] [--experiment NAME]

Stages (each timed): load the cohort (``envs.cohorts.load_cohort``, files shipped inside
lifelines / SurvSet, no download) -> stratified train/test split -> train the baseline MLP
(task loss only) -> train the same MLP from the same initialisation and batch order with
FairGrad (task loss + one smooth fairness loss per sensitive attribute, conflicting gradients
projected; ``algorithms.fairgrad``, arXiv 2504.14388) -> evaluate both on the test split:
AUROC, EOD (TPR gap), equalized-odds difference and demographic-parity difference (fairlearn
definitions) over the intersection of the sensitive columns and per attribute, each with a
percentile bootstrap 95% CI over test patients (resampling patients; the max - min gaps are
biased upwards under resampling, so a point estimate can sit low in, or below, its
interval) -> print a table -> log to MLflow.

MLflow layout: ONE run per invocation (name ``fairgrad-classifier/<dataset>``) with metric
namespaces ``baseline/...`` and ``fairgrad/...`` (``<model>/<metric>``, ``<model>/<metric>/ci_low``,
``.../ci_high``, per attribute ``<model>/<attr>/<metric>``, per epoch ``<model>/train/...``) and
``delta/<metric>`` = fairgrad - baseline. Only aggregates are logged, never patient rows.

Decisions are ``p >= 0.5`` from a class-balanced BCE (``pos_weight = n_neg / n_pos``), so both
models predict both classes on imbalanced cohorts. Bad input (unknown dataset, sensitive column,
option value) exits 2 before any MLflow run is created.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from platform import faults
from platform.cli import add_common_train_options, config_from_args, parser, run_main
from typing import Any, Literal

import numpy as np

from base.config import option
from base.errors import UsageError, require

DATASETS = ("actg175", "support2", "kidney")
#: accepted spellings of a sensitive attribute -> candidate column names in the cohort frame
ALIASES = {"gender": ("gender", "sex"), "sex": ("sex", "gender"), "race": ("race",),
           "age_band": ("age_band",)}
METRICS = ("auroc", "eod", "equalized_odds_difference", "demographic_parity_difference")
#: argparse dest -> config field (--iterations is an alias of --epochs: see main)
FLAGS = {"dataset": "dataset", "sensitive": "sensitive", "epochs": "epochs", "seed": "seed",
         "fairness_loss": "fairness_loss", "bootstrap": "bootstrap"}


@dataclass
class TabularConfig:
    """``fairgrad-classifier``: an MLP on a real cohort, trained with and without FairGrad."""

    dataset: str = option("actg175", f"cohort (envs.cohorts): {', '.join(DATASETS)}")
    sensitive: list[str] = option(["race", "gender"], "sensitive attributes (race, gender/sex, "
                                  "age_band); one fairness loss each")
    epochs: int = option(30, "training epochs for each of the two models")
    hidden: int = option(64, "width of the two hidden layers")
    lr: float = option(1e-3, "Adam learning rate")
    batch_size: int = option(256, "minibatch size (fairness surrogates are computed per minibatch)")
    fairness_loss: Literal["eo", "dp", "eo+dp"] = option(
        "eo", "surrogate per sensitive attribute: equalized odds, demographic parity, or their sum")
    fairness_weight: float = option(1.0, "scale of each fairness objective before its gradient "
                                    "is taken")
    test_size: float = option(0.3, "fraction of patients held out for evaluation (stratified by "
                              "label x groups)")
    bootstrap: int = option(1000, "bootstrap resamples of the test set for the CIs (0 = no CIs)")
    confidence: float = option(0.95, "CI level")
    seed: int = option(0, "seed for the split, the initialisation, batch order and FairGrad's "
                       "projection order")

    def __post_init__(self):
        require(self.dataset in DATASETS, "dataset",
                f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.batch_size >= 8, "batch_size", f"must be >= 8, got {self.batch_size}")
        require(self.fairness_weight >= 0, "fairness_weight", "must be >= 0")
        require(0.05 <= self.test_size <= 0.8, "test_size", f"must be in [0.05, 0.8], got {self.test_size}")
        require(self.bootstrap == 0 or self.bootstrap >= 100, "bootstrap", "must be 0 or >= 100")
        require(0.5 < self.confidence < 1, "confidence", "must be in (0.5, 1)")
        require(len(self.sensitive) >= 1, "sensitive", "name at least one column, e.g. race,gender")
        require(0 <= self.seed < 2**32, "seed",  # scikit-learn's random_state range
                f"must be in 0..{2**32 - 1}, got {self.seed}")


def resolve_sensitive(dataset: str, names: list[str]) -> list[str]:
    """Map user names (``gender`` or ``sex``) to the cohort's columns; UsageError if unknown."""
    from envs.cohorts import COHORTS

    available = list(COHORTS[dataset]["sensitive"]) + list(COHORTS[dataset]["extra"])
    out = []
    for name in names:
        match = next((c for c in ALIASES.get(name, (name,)) if c in available), None)
        if match is None:
            raise UsageError(f"--sensitive: unknown column {name!r} for dataset {dataset}; "
                             f"allowed: {', '.join(available)} (gender and sex are aliases)")
        if match not in out:
            out.append(match)
    return out


# ---------------------------------------------------------------------------------- data
@dataclass
class Split:
    """Standardised features and group codes for train and test patients."""

    x_train: np.ndarray  # (n_train, D) float32
    y_train: np.ndarray  # (n_train,) int
    g_train: np.ndarray  # (n_train, A) int codes, one column per sensitive attribute
    x_test: np.ndarray
    y_test: np.ndarray
    g_test: np.ndarray
    s_test: Any          # DataFrame (n_test, A) of group names (for fairlearn)
    attributes: list[str]


def prepare(cfg: TabularConfig) -> Split:
    from sklearn.model_selection import train_test_split

    from envs.cohorts import COHORTS, load_cohort

    sens = resolve_sensitive(cfg.dataset, cfg.sensitive)
    spec = COHORTS[cfg.dataset]
    df = load_cohort(cfg.dataset)
    x = df[spec["features"]].to_numpy(np.float64)
    # the sensitive attributes are inputs too (as indicators), as in the recorded data
    x = np.concatenate([x] + [_one_hot(df[c].to_numpy()) for c in sens], axis=1)
    y = df[spec["label"]].to_numpy().astype(int)
    codes = np.stack([np.unique(df[c].to_numpy().astype(str), return_inverse=True)[1] for c in sens], 1)
    strata = [f"{a}|{'|'.join(map(str, r))}" for a, r in zip(y, codes)]
    counts = {s: strata.count(s) for s in set(strata)}
    strata = [s if counts[s] >= 2 else "rare" for s in strata]
    tr, te = train_test_split(np.arange(len(df)), test_size=cfg.test_size, random_state=cfg.seed,
                              stratify=strata)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd == 0] = 1.0
    x = ((x - mu) / sd).astype(np.float32)
    return Split(x[tr], y[tr], codes[tr], x[te], y[te], codes[te],
                 df.iloc[te][sens].reset_index(drop=True), sens)


def _one_hot(values: np.ndarray) -> np.ndarray:
    _, inv = np.unique(values.astype(str), return_inverse=True)
    return np.eye(inv.max() + 1)[inv][:, 1:] if inv.max() > 0 else np.zeros((len(values), 0))


# ---------------------------------------------------------------------------------- training
def _mlp(d_in: int, hidden: int):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )


def fairness_losses(logits, y, groups, kind: str, weight: float) -> list:
    """One surrogate per attribute column of ``groups`` (shape (B, A)) -> list of A scalars."""
    from algorithms.fairgrad import dp_gap_surrogate, eo_gap_surrogate

    out = []
    for a in range(groups.shape[1]):
        g = groups[:, a]
        loss = logits.new_zeros(())
        if "eo" in kind:
            loss = loss + eo_gap_surrogate(logits, y, g)
        if "dp" in kind:
            loss = loss + dp_gap_surrogate(logits, g)
        out.append(weight * loss)
    return out


def train_model(split: Split, cfg: TabularConfig, use_fairgrad: bool, log=None):
    """Train one MLP; same init and batch order for both arms (seeded). Returns (model, history)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: extra threads only contend (measured 9 ms vs 180 ms a step)
    try:
        return _train(split, cfg, use_fairgrad, log)
    finally:
        torch.set_num_threads(threads)


def _train(split: Split, cfg: TabularConfig, use_fairgrad: bool, log):
    import torch

    from algorithms.fairgrad import FairGrad

    torch.manual_seed(cfg.seed)
    model = _mlp(split.x_train.shape[1], cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    fg = FairGrad(opt, seed=cfg.seed) if use_fairgrad else None
    x = torch.from_numpy(split.x_train)
    y = torch.from_numpy(split.y_train.astype(np.float32))
    g = torch.from_numpy(split.g_train.astype(np.int64))
    pos_weight = (len(y) - y.sum()) / y.sum().clamp_min(1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        faults.check("tabular.epoch")  # crash tests (EQUIRL_FAULT); a no-op otherwise
        perm = torch.randperm(len(x), generator=gen)
        sums = {"task_loss": 0.0, "fair_loss": 0.0, "conflicts": 0.0}
        batches = 0
        for start in range(0, len(x), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            logits = model(x[idx]).squeeze(-1)
            task = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[idx], pos_weight=pos_weight)
            fair = fairness_losses(logits, y[idx], g[idx], cfg.fairness_loss, cfg.fairness_weight)
            if fg is not None:
                stats = fg.step([task, *fair])
                sums["conflicts"] += stats.conflicts
            else:
                opt.zero_grad(set_to_none=True)
                task.backward()
                opt.step()
            sums["task_loss"] += float(task.detach())
            sums["fair_loss"] += float(sum(f.detach() for f in fair))
            batches += 1
        history.append({k: v / batches for k, v in sums.items()})
        if log is not None:
            log({f"train/{k}": v for k, v in history[-1].items()}, epoch)
    return model, history


def predict(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x)).squeeze(-1)).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------- metrics
def tabular_metrics(y: np.ndarray, score: np.ndarray, codes: np.ndarray, n_groups: int) -> dict:
    """AUROC and fairlearn's EOD / equalized-odds / DP differences of ``p >= 0.5`` decisions.

    y (0/1), score, codes (intersectional group codes): shape (..., n), leading axes being
    bootstrap resamples -> floats or arrays of shape (...,). All from the ``fairness``
    package (``auroc``, ``differences_from_codes``): binary numbers equal fairlearn's; a group
    absent from a resample is left out, a present group without positives (negatives) has
    TPR (FPR) 0, as in fairlearn.
    """
    from fairness.metrics import auroc
    from fairness.scores import differences_from_codes

    pred = (np.asarray(score) >= 0.5).astype(np.int64)
    d = differences_from_codes(y, pred, codes, n_groups, 2, "binary", 1)
    return {"auroc": auroc(y, score), "eod": d["equal_opportunity_difference"],
            "equalized_odds_difference": d["equalized_odds_difference"],
            "demographic_parity_difference": d["demographic_parity_difference"]}


def point_metrics(y: np.ndarray, score: np.ndarray, sensitive) -> dict[str, float]:
    """:func:`tabular_metrics` over the intersection of the columns of ``sensitive`` (n, A)."""
    from fairness.groups import Groups

    groups = Groups.of(sensitive)
    return {k: float(v) for k, v in tabular_metrics(y, score, groups.codes, len(groups)).items()}


def batch_metrics(y: np.ndarray, score: np.ndarray, codes: np.ndarray, idx: np.ndarray) -> dict:
    """:func:`tabular_metrics` of B resamples: ``idx`` shape (B, n) -> arrays of shape (B,)."""
    return tabular_metrics(y[idx], score[idx], codes[idx], int(codes.max()) + 1)


def evaluate(y, score, sensitive, cfg: TabularConfig) -> dict[str, float]:
    """Point metrics + percentile bootstrap CIs (``fairness.bootstrap``, resampling test
    patients), over the intersection of all columns and per attribute."""
    from fairness.bootstrap import bootstrap_ci
    from fairness.groups import Groups

    # "" = intersection of all columns, "<col>/" = that attribute alone
    sets = {"": Groups.of(sensitive)}
    sets.update({f"{c}/": Groups.of(sensitive[[c]]) for c in sensitive.columns})
    sizes = [len(g) for g in sets.values()]

    def statistic(yy, ss, *codes):
        return {prefix + name: v for prefix, c, G in zip(sets, codes, sizes)
                for name, v in tabular_metrics(yy, ss, c, G).items()}

    codes = [g.codes for g in sets.values()]
    point = statistic(y, score, *codes)
    cis = bootstrap_ci(statistic, y, score, *codes, n_resamples=cfg.bootstrap,
                       confidence=cfg.confidence, seed=cfg.seed,
                       vectorized=True) if cfg.bootstrap else {}
    out: dict[str, float] = {}
    for key, value in point.items():
        out[key] = float(value)
        if key in cis:
            out[f"{key}/ci_low"], out[f"{key}/ci_high"] = cis[key]
    return out


# ---------------------------------------------------------------------------------- driver
def run(cfg: TabularConfig, log=None) -> dict[str, Any]:
    """Both arms end to end. ``log(metrics, step)`` receives namespaced metrics (or None)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    split = prepare(cfg)
    timings["load"] = time.perf_counter() - t0
    results: dict[str, Any] = {"n_train": len(split.y_train), "n_test": len(split.y_test),
                               "attributes": split.attributes}
    for arm, use_fg in (("baseline", False), ("fairgrad", True)):
        t0 = time.perf_counter()
        arm_log = None if log is None else (lambda m, s, a=arm: log({f"{a}/{k}": v for k, v in m.items()}, s))
        model, history = train_model(split, cfg, use_fg, arm_log)
        timings[f"train_{arm}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results[arm] = evaluate(split.y_test, predict(model, split.x_test), split.s_test, cfg)
        results[arm]["train/conflicts_per_epoch"] = history[-1]["conflicts"]
        timings[f"evaluate_{arm}"] = time.perf_counter() - t0
    results["delta"] = {m: results["fairgrad"][m] - results["baseline"][m] for m in METRICS}
    results["time"] = timings
    return results


def format_table(results: dict[str, Any], cfg: TabularConfig) -> str:
    level = round(cfg.confidence * 100)
    head = f"{'metric':<46} {'baseline':>22} {'fairgrad':>22}"
    title = (f"fairgrad-classifier on {cfg.dataset} (test n={results['n_test']}; "
             f"groups: {' x '.join(results['attributes'])}; {level}% bootstrap CI)")
    lines = [title, head, "-" * len(head)]
    for prefix in [""] + [f"{a}/" for a in results["attributes"]]:
        for m in METRICS:
            if prefix and m == "auroc":
                continue
            cells = []
            for arm in ("baseline", "fairgrad"):
                r = results[arm]
                ci = (f" [{r[prefix + m + '/ci_low']:.3f}, {r[prefix + m + '/ci_high']:.3f}]"
                      if prefix + m + "/ci_low" in r else "")
                cells.append(f"{r[prefix + m]:.3f}{ci}")
            label = (prefix + m) if prefix else f"{m} (intersection)" if m != "auroc" else m
            lines.append(f"{label:<46} {cells[0]:>22} {cells[1]:>22}")
    return "\n".join(lines)


def build_config(args) -> TabularConfig:
    """defaults < --config < --set < flags (``platform.cli``); --epochs wins over --iterations."""
    if getattr(args, "epochs", None) is None:
        args.epochs = getattr(args, "iterations", None)
    cfg = config_from_args(TabularConfig, args, flags=FLAGS)
    cfg.sensitive = resolve_sensitive(cfg.dataset, cfg.sensitive)
    return cfg


def main(algorithm: str, argv: list[str]) -> int:
    p = parser(f"python -m platform.train {algorithm}", __doc__.split("\n\n")[0], TabularConfig)
    p.add_argument("--dataset", default=None,
                   help=f"cohort: {', '.join(DATASETS)} (default actg175)")
    p.add_argument("--sensitive", default=None,
                   help="comma-separated sensitive columns, e.g. race,gender (default race,gender)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per model (default 30; --iterations is an alias)")
    p.add_argument("--fairness-loss", default=None, help="eo, dp or eo+dp (default eo)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000)")
    add_common_train_options(p)
    args = p.parse_args(argv)
    if args.resume:
        raise UsageError("--resume: fairgrad-classifier runs take seconds; start a new run instead")
    cfg = build_config(args)

    from platform import tracking

    from base.config import tracked_params

    tracking.setup(args.tracking_uri, args.experiment)
    import mlflow

    tags = tracking.run_tags("tabular", algorithm, dataset=cfg.dataset)
    with tracking.tracked_run(run_name=f"{algorithm}/{cfg.dataset}", tags=tags) as run:
        mlflow.log_params(tracked_params(cfg))
        tracking.log_config(cfg)
        results = run_and_log(cfg)
        print(format_table(results, cfg))
        print(f"mlflow run {run.info.run_id}")
    return 0


def run_and_log(cfg: TabularConfig) -> dict[str, Any]:
    from platform.tracking import log_metrics

    import mlflow

    results = run(cfg, log=log_metrics)
    final = {f"{arm}/{k}": v for arm in ("baseline", "fairgrad", "delta")
             for k, v in results[arm].items()}
    final.update({f"time/{k}": v for k, v in results["time"].items()})
    log_metrics({k: v for k, v in final.items() if not (isinstance(v, float) and math.isnan(v))},
                step=cfg.epochs)
    mlflow.log_dict(json.loads(json.dumps(results, default=float)), "fairgrad_results.json")
    return results


if __name__ == "__main__":
    import sys

    sys.exit(run_main(lambda argv: main("fairgrad-classifier", argv)))
