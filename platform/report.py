"""``python -m platform.report --experiment NAME --out DIR``: statistics report of a λ × seed sweep.

Reads the child runs of a sweep (``platform.sweep``) from MLflow and writes ``report.md``,
CSV tables (``summary.csv``, ``comparisons.csv``, ``convergence.csv``) and PNG plots (Pareto
fronts with the rule-based baselines on them, return curves, training curves per group,
wait-time distributions by group) into ``--out``; the same files are logged as artifacts
(``report/``) of the sweep's parent run.

An *arm* is what a row of the report compares: a trained λ (with its ``robust_mode`` when
λ > 0: ``λ=0.3 ggf``) or a rule (``rule:triage``, the sweep's ``--baselines``).

Statistics (:mod:`platform.stats`): per scenario × arm, mean ± std and a 95% bootstrap CI over
seeds; each trained arm against ``--baseline-lambda`` and the baseline against each rule,
Welch's t-test with Bonferroni and Holm corrections (family = one metric and one kind of
comparison, across all scenarios × arms), Cohen's d, and "fairness improvement %" /
"efficiency retention %" / per-capita change with bootstrap CIs. The report says plainly
when a difference is not significant. Claim under test (EquiRL hospital-allocation report):
~25% fairness improvement at ~98% efficiency for λ=0.3 across four hospitals.

Convergence (:func:`convergence_table`; ``--check-convergence`` prints it and exits 1 when an
arm has not settled): per scenario × trained arm, the drift of the evaluation return
(``eval_curve/return``, logged with ``eval_every``; else the training ``return_mean``) over
the last 20% of iterations, against the seed-to-seed spread.

The figures are drawn by :mod:`platform.report_plots`, ``report.md`` by
:mod:`platform.report_markdown`; this module loads the runs and builds the tables.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from platform import stats
from platform.cli import parser, run_main
from platform.report_markdown import convergence_section, write_markdown
from platform.report_plots import (
    plot_pareto,
    plot_return_curves,
    plot_training_curves,
    plot_waits,
)
from typing import Literal

import numpy as np
import pandas as pd

from base.errors import UsageError

# --- names shared with platform.sweep (one place) ------------------------------------------
PARAM_SCENARIO = "scenario"
PARAM_LAMBDA = "robust_lambda"
PARAM_SEED = "seed"
PARAM_MODE = "robust_mode"
PARAM_POLICY = "policy"  # rule-based baselines (HeuristicConfig.policy)
PARAM_ITERATIONS = "iterations"
TAG_ROLE = "equirl.sweep.role"  # "parent" | "trial"
TAG_SWEEP = "equirl.sweep.name"
TAG_TRIAL = "equirl.sweep.trial_id"
EPISODES_ARTIFACT = "eval/episodes.parquet"
EVAL_PREFIX = "eval/"
RETURN_KEY = "eval/return"
CURVE_SUFFIXES = ("/return_per_capita", "/return", "/objective")  # first one present
WAIT_SUFFIX = "/mean_wait"
PER_CAPITA_SUFFIX = "/return_per_capita"
CURVE_KEYS = ("eval_curve/return", "return_mean")  # the return curve: first one logged
TAIL = 0.2  # convergence: the last 20% of iterations
ALPHA = 0.05
TRAINED, RULE = "trained", "rule"


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: MLflow key, label, which direction is better, and its role.

    ``score_of_one`` marks fairness scores of the form 1 − unfairness (higher is fairer,
    1 = perfectly fair): their "improvement %" is the relative reduction of the unfairness
    1 − score, not of the score (0.80 -> 0.85 removes 25% of the unfairness).
    """

    key: str
    label: str
    direction: Literal["higher", "lower"]
    role: Literal["efficiency", "fairness", "outcome", "other"]
    score_of_one: bool = False


# envs.hospital.metrics defines all four as scores in [0, 1], higher is fairer (``*_score``):
# DP = 1 - max |treatment rate(g) - overall|, EO = 1 - max |success|treated(g) - overall|,
# WTE = 1 - CV(mean wait by group), individual = 1 - mean |treated_i - kNN neighbours|.
REQUIRED = (
    MetricSpec(RETURN_KEY, "return", "higher", "efficiency"),
    MetricSpec("eval/fairness/dp_score", "DP", "higher", "fairness", score_of_one=True),
    MetricSpec("eval/fairness/eo_score", "EO", "higher", "fairness", score_of_one=True),
    MetricSpec("eval/fairness/wte_score", "WTE", "higher", "fairness", score_of_one=True),
    MetricSpec("eval/fairness/individual_score", "individual", "higher", "fairness",
               score_of_one=True),
)
#: the names these scores had before issue 12 (same values): sweeps logged then still report
LEGACY_KEYS = {f"eval/fairness/{k}": f"eval/fairness/{k}_score"
               for k in ("dp", "eo", "wte", "individual")}


def optional_specs(columns) -> list[MetricSpec]:
    """Per-group per-capita outcomes (tested like the required metrics), utilisation and
    per-group wait metrics (summarised) present in the runs."""
    return outcome_specs(columns) + [
        MetricSpec(c, c[len(EVAL_PREFIX):], "higher" if "/util/" in c else "lower", "other")
        for c in sorted(columns)
        if c.startswith(EVAL_PREFIX + "util/")
        or (c.startswith(EVAL_PREFIX + "group/") and c.endswith(WAIT_SUFFIX))]


def outcome_specs(columns) -> list[MetricSpec]:
    """``eval/group/<g>/return_per_capita``: each group's own outcome per decision about it."""
    return [MetricSpec(c, f"per-capita {c.split('/')[2]}", "higher", "outcome")
            for c in sorted(columns)
            if c.startswith(EVAL_PREFIX + "group/") and c.endswith(PER_CAPITA_SUFFIX)]


def arm_label(kind: str, lam: float, mode, policy) -> str:
    """``λ=0``, ``λ=0.3 ggf`` (trained; the mode is left out at λ = 0 and when unknown) or
    ``rule:triage``."""
    if kind == RULE:
        return f"rule:{policy}"
    has_mode = isinstance(mode, str) and mode not in ("", "none") and lam != 0
    return f"λ={lam:g}" + (f" {mode}" if has_mode else "")


# --- loading -------------------------------------------------------------------------------
def _client(uri: str | None):
    from platform.tracking import check_tracking_uri, default_tracking_uri

    import mlflow

    uri = uri or default_tracking_uri()
    check_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def find_parent(client, experiment: str, parent_run_id: str | None = None):
    """The sweep parent run (latest one in ``experiment`` unless ``parent_run_id``)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments())
        raise UsageError(f"--experiment: no experiment named {experiment!r}; known: "
                         f"{', '.join(known) or '(none)'}")
    if parent_run_id:
        try:
            run = client.get_run(parent_run_id)
        except Exception:  # noqa: BLE001  (mlflow raises MlflowException subclasses)
            raise UsageError(f"--parent-run-id: no run {parent_run_id!r}") from None
        if run.info.experiment_id != exp.experiment_id:
            raise UsageError(f"--parent-run-id: run {parent_run_id} is not in {experiment!r}")
        return exp, run
    parents = client.search_runs([exp.experiment_id], f"tags.`{TAG_ROLE}` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise UsageError(f"--experiment: {experiment!r} has no sweep (no run tagged "
                         f"{TAG_ROLE}=parent); run `python -m platform.sweep` first")
    return exp, parents[0]


def load_trials(client, exp_id: str, parent_id: str) -> pd.DataFrame:
    """One row per child run: run_id, status, scenario, lambda, seed and its latest metrics."""
    runs = []
    token = None
    while True:
        page = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for r in runs:
        p = r.data.params
        kind = RULE if p.get(PARAM_POLICY) else TRAINED
        lam = _float(p.get(PARAM_LAMBDA))
        mode = p.get(PARAM_MODE) if kind == TRAINED else None
        row = {"run_id": r.info.run_id, "status": r.info.status,
               "scenario": p.get(PARAM_SCENARIO), "lambda": lam, "seed": p.get(PARAM_SEED),
               "kind": kind, "mode": mode, "policy": p.get(PARAM_POLICY),
               "arm": arm_label(kind, lam, mode, p.get(PARAM_POLICY)),
               "iterations": _float(p.get(PARAM_ITERATIONS))}
        metrics = dict(r.data.metrics)
        for legacy, key in LEGACY_KEYS.items():
            if legacy in metrics:
                metrics.setdefault(key, metrics.pop(legacy))
        row.update(metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def _rows(df: pd.DataFrame):
    """Rows as attribute objects (``lambda`` is a keyword: exposed as ``.lam``)."""
    from types import SimpleNamespace

    for rec in df.to_dict("records"):
        yield SimpleNamespace(lam=rec.get("lambda"), **rec)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def check_trials(df: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Finished trials with every required param and metric, else UsageError naming the gaps."""
    if df.empty:
        raise UsageError(f"--experiment: the sweep in {experiment!r} has no trial runs")
    done = df[df["status"] == "FINISHED"]
    if done.empty:
        raise UsageError(f"--experiment: no finished trial runs in {experiment!r} "
                         f"(statuses: {', '.join(sorted(df['status'].unique()))})")
    trained = done[done["kind"] == TRAINED]
    bad_params = [n for n, frame, c in ((PARAM_SCENARIO, done, "scenario"),
                                        (PARAM_LAMBDA, trained, "lambda")) if frame[c].isna().any()]
    if bad_params:
        raise UsageError(f"runs lack the params the report needs: {', '.join(bad_params)}")
    if trained.empty:
        raise UsageError(f"--experiment: the sweep in {experiment!r} has no finished trained "
                         "trial (only rule-based baselines)")
    missing = []
    for spec in REQUIRED:
        n_missing = int(done[spec.key].isna().sum()) if spec.key in done else len(done)
        if n_missing:
            missing.append(f"{spec.key} (missing in {n_missing} of {len(done)} runs)")
    if missing:
        raise UsageError("runs lack the metrics the report needs: " + "; ".join(missing))
    return done.reset_index(drop=True)


# --- tables --------------------------------------------------------------------------------
ARM_COLUMNS = ["kind", "lambda", "mode", "policy"]


def arms_in_order(trials: pd.DataFrame) -> list[str]:
    """Arm labels: trained by (λ, mode), then the rules by name."""
    first = trials.drop_duplicates("arm")
    trained = first[first["kind"] == TRAINED].sort_values(["lambda", "mode"], na_position="first")
    rules = first[first["kind"] == RULE].sort_values("policy")
    return [*trained["arm"], *rules["arm"]]


def _arm_groups(frame: pd.DataFrame):
    """``(scenario, arm, rows)`` in report order."""
    order = {a: i for i, a in enumerate(arms_in_order(frame))}
    keys = sorted({(sc, a) for sc, a in zip(frame["scenario"], frame["arm"])},
                  key=lambda k: (k[0], order[k[1]]))
    for sc, arm in keys:
        yield sc, arm, frame[(frame["scenario"] == sc) & (frame["arm"] == arm)]


def summary_table(trials: pd.DataFrame, specs: list[MetricSpec]) -> pd.DataFrame:
    """Rows: scenario × arm × metric with n, mean, std, 95% bootstrap CI over seeds."""
    rows = []
    for scenario, arm, g in _arm_groups(trials):
        first = g.iloc[0]
        for spec in specs:
            if spec.key not in g or g[spec.key].isna().all():
                continue
            s = stats.summarize(g[spec.key].to_numpy())
            rows.append({"scenario": scenario, "arm": arm,
                         **{c: first[c] for c in ARM_COLUMNS}, "metric": spec.label,
                         "key": spec.key, "n": s.n, "mean": s.mean, "std": s.std,
                         "ci_low": s.ci_low, "ci_high": s.ci_high})
    return pd.DataFrame(rows)


def tested_specs(columns) -> list[MetricSpec]:
    """The metrics with tests: return, the four fairness scores, per-group per-capita outcome."""
    return list(REQUIRED) + outcome_specs(columns)


def _compare(x: np.ndarray, b: np.ndarray, spec: MetricSpec) -> dict:
    w = stats.welch(x, b)
    kind = "retention" if spec.role == "efficiency" else "improvement"
    if spec.score_of_one:  # improvement = relative reduction of 1 - score
        ch = stats.relative_change(1 - x, 1 - b, kind=kind, direction="lower")
    else:
        ch = stats.relative_change(x, b, kind=kind, direction=spec.direction)
    return {"metric": spec.label, "key": spec.key, "direction": spec.direction, "n": len(x),
            "n_baseline": len(b), "mean": float(np.mean(x)), "baseline_mean": float(np.mean(b)),
            "t": w.statistic, "p": w.pvalue, "cohens_d": stats.cohens_d(x, b), "change": kind,
            "change_pct": ch.value, "change_ci_low": ch.ci_low, "change_ci_high": ch.ci_high}


def comparison_table(trials: pd.DataFrame, baseline: float) -> pd.DataFrame:
    """Per scenario and tested metric (:func:`tested_specs`), two kinds of comparison:

    * ``lambda``: each trained arm with λ ≠ baseline against the baseline λ (of the same
      mode when the baseline λ > 0);
    * ``rule``: the baseline λ (trained PPO) against each rule-based baseline.

    Columns: the arm (``arm``, ``lambda``, ``mode``) and what it is compared with
    (``reference``), Welch t and p, Bonferroni/Holm-corrected p (family = one metric and one
    kind, across all scenarios × arms), Cohen's d (arm minus reference), and the % change
    with its CI: "improvement" for fairness and per-capita outcome, "retention" for return.
    """
    specs = tested_specs(trials.columns)
    rows = []
    trained = trials[trials["kind"] == TRAINED]
    for scenario, arm, g in _arm_groups(trials):
        sc = trained[trained["scenario"] == scenario]
        base = sc[np.isclose(sc["lambda"], baseline)]
        first = g.iloc[0]
        if first["kind"] == TRAINED:
            if math.isclose(first["lambda"], baseline):
                continue
            if baseline != 0 and base["mode"].nunique() > 1:
                base = base[base["mode"] == first["mode"]]
            pairs = [("lambda", g, base, first, base)]
        else:  # trained PPO at the baseline λ against the rule
            pairs = [("rule", base, g, base.iloc[0] if len(base) else None, g)]
        for kind, x_rows, b_rows, head, ref_rows in pairs:
            if head is None or x_rows.empty or b_rows.empty:
                continue
            for spec in specs:
                if any(spec.key not in f or f[spec.key].isna().all() for f in (x_rows, b_rows)):
                    continue
                rows.append({"scenario": scenario, "kind": kind, "arm": head["arm"],
                             "lambda": head["lambda"], "mode": head["mode"],
                             "reference": ref_rows.iloc[0]["arm"],
                             **_compare(x_rows[spec.key].to_numpy(), b_rows[spec.key].to_numpy(),
                                        spec)})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["family"] = df["kind"] + ":" + df["key"]
    for method in ("bonferroni", "holm"):
        df[f"p_{method}"] = np.nan
        for _, idx in df.groupby("family").groups.items():
            df.loc[idx, f"p_{method}"] = stats.adjust(df.loc[idx, "p"].to_numpy(), method)
    better = np.where(df["direction"] == "higher", df["mean"] > df["baseline_mean"],
                      df["mean"] < df["baseline_mean"])
    df["significant_holm"] = df["p_holm"] < ALPHA
    df["verdict"] = [_verdict(sig, b, p) for sig, b, p in
                     zip(df["significant_holm"], better, df["p_holm"])]
    return df


def _verdict(significant: bool, better: bool, p_holm: float) -> str:
    if not math.isfinite(p_holm):
        return "not testable"
    if not significant:
        return "not significant"
    return "significantly better" if better else "significantly worse"


# --- Pareto points (plotted by platform.report_plots) ------------------------------------
def _pareto_mask(x: np.ndarray, y: np.ndarray, y_higher: bool) -> np.ndarray:
    """Points not dominated in (x higher, y higher/lower) -- shapes (k,) -> bool (k,)."""
    yy = y if y_higher else -y
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        dominated = (x >= x[i]) & (yy >= yy[i]) & ((x > x[i]) | (yy > yy[i]))
        keep[i] = not dominated.any()
    return keep


def pareto_points(summary: pd.DataFrame) -> pd.DataFrame:
    """The points of the Pareto plot: per scenario × fairness metric × arm (rules included),
    return and fairness means with their CIs, and ``on_front`` (not dominated by any other
    point of the panel, rules included)."""
    rows = []
    for sc in sorted(summary["scenario"].unique()):
        here = summary[summary.scenario == sc]
        ret = here[here.key == RETURN_KEY].set_index("arm")
        for spec in (s for s in REQUIRED if s.role == "fairness"):
            f = here[here.key == spec.key].set_index("arm")
            arms = [a for a in ret.index if a in f.index]
            x, y = ret.loc[arms, "mean"].to_numpy(), f.loc[arms, "mean"].to_numpy()
            front = _pareto_mask(x, y, spec.direction == "higher") if arms else []
            rows += [{"scenario": sc, "metric": spec.label, "key": spec.key, "arm": arm,
                      "kind": ret.loc[arm, "kind"], "mode": ret.loc[arm, "mode"],
                      "return_mean": xi, "return_ci_low": ret.loc[arm, "ci_low"],
                      "return_ci_high": ret.loc[arm, "ci_high"], "fairness": yi,
                      "fairness_ci_low": f.loc[arm, "ci_low"],
                      "fairness_ci_high": f.loc[arm, "ci_high"], "on_front": bool(on)}
                     for arm, xi, yi, on in zip(arms, x, y, front)]
    return pd.DataFrame(rows)


def training_curves(client, trials: pd.DataFrame) -> pd.DataFrame:
    """Long table scenario, lambda, seed, group, metric, iteration, value.

    Per-group training curves: the env runners' ``group/<g>/return_per_capita`` (mean
    per-capita episode return of group g; ``group/<g>/return`` or the learner's old
    ``group/<g>/objective`` for runs logged before it existed). Histories are deduplicated on the step (= training iteration): a
    replayed iteration after a hard kill keeps its last logged value.
    """
    rows = []
    for r in _rows(trials[trials["kind"] == TRAINED]):
        keys = [k for k in _logged(trials, r.run_id) if k.startswith("group/") and k.count("/") == 2]
        for suffix in CURVE_SUFFIXES:
            chosen = sorted(k for k in keys if k.endswith(suffix))
            if chosen:
                break
        for key in chosen:
            rows += [{"scenario": r.scenario, "arm": r.arm, "lambda": r.lam, "seed": r.seed,
                      "group": key.split("/")[1], "metric": key.split("/")[2], "iteration": step,
                      "value": v} for step, v in history(client, r.run_id, key)]
    return pd.DataFrame(rows, columns=["scenario", "arm", "lambda", "seed", "group", "metric",
                                       "iteration", "value"])


def _logged(trials: pd.DataFrame, run_id: str) -> set[str]:
    """The metric keys run ``run_id`` logged (its non-NaN columns in :func:`load_trials`)."""
    row = trials.loc[trials["run_id"] == run_id].iloc[0]
    return {k for k, v in row.items() if isinstance(v, (int, float)) and not pd.isna(v)}


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a metric, one per step (a replayed iteration after a hard kill
    keeps its last logged value), by step."""
    last: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, key):
        if m.step not in last or m.timestamp >= last[m.step][0]:
            last[m.step] = (m.timestamp, m.value)
    return [(step, v) for step, (_, v) in sorted(last.items())]


def episode_waits(client, trials: pd.DataFrame) -> pd.DataFrame:
    """Per-episode mean wait by group from each trial's Parquet artifact (long table).

    Falls back to the per-trial ``eval/group/<g>/mean_wait`` summary when a trial has no
    episode artifact. Columns: scenario, lambda, group, wait, source.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in _rows(trials):
            lam, arm = r.lam, r.arm
            try:
                local = client.download_artifacts(r.run_id, EPISODES_ARTIFACT, tmp)
                ep = pd.read_parquet(local)
            except Exception:  # noqa: BLE001  (no artifact: use the summary metrics)
                ep = None
            if ep is not None:
                for col in [c for c in ep.columns if c.startswith("group/") and c.endswith(WAIT_SUFFIX)]:
                    rows += [{"scenario": r.scenario, "arm": arm, "lambda": lam,
                              "group": col.split("/")[1], "wait": float(v), "source": "episodes"}
                             for v in ep[col].dropna()]
                continue
            metrics = trials.loc[trials.run_id == r.run_id].iloc[0]
            for col in [c for c in trials.columns
                        if c.startswith(EVAL_PREFIX + "group/") and c.endswith(WAIT_SUFFIX)]:
                if pd.notna(metrics[col]):
                    rows.append({"scenario": r.scenario, "arm": arm, "lambda": lam,
                                 "group": col.split("/")[2], "wait": float(metrics[col]),
                                 "source": "trial summary"})
    return pd.DataFrame(rows, columns=["scenario", "arm", "lambda", "group", "wait", "source"])


def return_curves(client, trials: pd.DataFrame) -> pd.DataFrame:
    """Long table scenario, arm, lambda, seed, metric, iteration, value of each trained run's
    return curve: ``eval_curve/return`` where logged (``eval_every``), else ``return_mean``."""
    rows = []
    for r in _rows(trials[trials["kind"] == TRAINED]):
        logged = _logged(trials, r.run_id)
        key = next((k for k in CURVE_KEYS if k in logged), None)
        if key is None:
            continue
        rows += [{"scenario": r.scenario, "arm": r.arm, "lambda": r.lam, "seed": r.seed,
                  "metric": key, "iteration": step, "value": v}
                 for step, v in history(client, r.run_id, key)]
    return pd.DataFrame(rows, columns=["scenario", "arm", "lambda", "seed", "metric",
                                       "iteration", "value"])


def _drift(it: np.ndarray, v: np.ndarray) -> float:
    """Least-squares slope of v over it, times the span of it: the change across the window."""
    if len(it) < 2 or np.ptp(it) == 0:
        return math.nan
    slope = np.polyfit(it.astype(float), v.astype(float), 1)[0]
    return float(slope * np.ptp(it))


def convergence_table(curves: pd.DataFrame, tail: float = TAIL) -> pd.DataFrame:
    """Per scenario × arm: is the return curve flat over the last ``tail`` of iterations?

    Per seed, the window is the iterations after ``(1 - tail)·N`` (N: the arm's last
    iteration); ``drift`` = mean over seeds of (least-squares slope × window span),
    ``seed_noise`` = sd over seeds (ddof 1) of each seed's mean in the window; ``flat`` =
    |drift| <= seed_noise, or within float round-off of 0 for a curve that does not move at
    all (None when fewer than 2 seeds have 2+ points in the window).
    """
    cols = ["scenario", "arm", "lambda", "metric", "seeds", "last_iteration", "window_from",
            "points", "drift", "drift_sd", "seed_noise", "flat"]
    rows = []
    for (scenario, arm), g in curves.groupby(["scenario", "arm"], sort=True):
        last = int(g["iteration"].max())
        start = (1 - tail) * last
        drifts, means, points = [], [], []
        for _, s in g.groupby("seed"):
            w = s[s["iteration"] > start].sort_values("iteration")
            points.append(len(w))
            if len(w) >= 2:
                drifts.append(_drift(w["iteration"].to_numpy(), w["value"].to_numpy()))
                means.append(float(w["value"].mean()))
        drift = float(np.mean(drifts)) if drifts else math.nan
        noise = float(np.std(means, ddof=1)) if len(means) >= 2 else math.nan
        # a curve that does not move at all (every seed the same constant) is flat, even
        # though its seed noise is 0 and its drift is float round-off
        tol = stats.REL_TOL * max(1.0, max((abs(m) for m in means), default=0.0))
        flat = None if len(means) < 2 else bool(abs(drift) <= max(noise, tol))
        rows.append({"scenario": scenario, "arm": arm, "lambda": float(g["lambda"].iloc[0]),
                     "metric": g["metric"].iloc[0], "seeds": g["seed"].nunique(),
                     "last_iteration": last, "window_from": int(math.floor(start)) + 1,
                     "points": min(points) if points else 0, "drift": drift,
                     "drift_sd": float(np.std(drifts, ddof=1)) if len(drifts) >= 2 else math.nan,
                     "seed_noise": noise, "flat": flat})
    return pd.DataFrame(rows, columns=cols)


# --- entry point ---------------------------------------------------------------------------
def build_report(client, experiment: str, out: Path, *, baseline: float = 0.0,
                 claim_lambda: float = 0.3, parent_run_id: str | None = None,
                 log_to_parent: bool = True, partial: str | None = None) -> dict:
    """Write report.md, CSVs and PNGs to ``out`` (and to the parent run). Returns a summary."""
    exp, parent = find_parent(client, experiment, parent_run_id)
    all_trials = load_trials(client, exp.experiment_id, parent.info.run_id)
    trials = check_trials(all_trials, experiment)
    lambdas = sorted(trials.loc[trials["kind"] == TRAINED, "lambda"].unique())
    if not any(math.isclose(x, baseline) for x in lambdas):
        raise UsageError(f"--baseline-lambda: {baseline:g} is not in the sweep; λ values: "
                         f"{', '.join(f'{x:g}' for x in lambdas)}")
    specs = list(REQUIRED) + optional_specs(trials.columns)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_table(trials, specs)
    comp = comparison_table(trials, baseline)
    curves = training_curves(client, trials)
    waits = episode_waits(client, trials)
    ret_curves = return_curves(client, trials)
    conv = convergence_table(ret_curves)
    arms = arms_in_order(trials)
    summary.to_csv(out / "summary.csv", index=False)
    comp.to_csv(out / "comparisons.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    waits.to_csv(out / "waits.csv", index=False)
    ret_curves.to_csv(out / "return_curves.csv", index=False)
    conv.to_csv(out / "convergence.csv", index=False)
    points = pareto_points(summary)
    points.to_csv(out / "pareto.csv", index=False)
    plots = {"Fairness vs efficiency (Pareto front per scenario, rules as black squares)":
             plot_pareto(points, out / "pareto.png",
                         [s for s in REQUIRED if s.role == "fairness"], RULE).name,
             "Return curves (convergence window shaded)":
             plot_return_curves(ret_curves, conv, out / "return_curves.png", arms, TAIL).name,
             "Training curves per group":
             plot_training_curves(curves, out / "training_curves.png", arms).name,
             "Wait-time distributions by group":
             plot_waits(waits, out / "wait_times.png", arms).name}
    cells = trials.groupby(["scenario", "arm"]).size()
    sweep_params = {k: v for k, v in parent.data.params.items()
                    if k in ("iterations", "iterations_per_scenario", "eval_episodes",
                             "eval_every", "train_batch_size", "num_envs_per_env_runner",
                             "env_vectorize", "algorithm", "modes", "baselines")}
    meta = {"experiment": experiment, "parent_run_id": parent.info.run_id,
            "sweep_name": parent.data.tags.get(TAG_SWEEP, ""), "n_finished": len(trials),
            "n_other": len(all_trials) - len(trials),
            "scenarios": sorted(trials["scenario"].unique()), "lambdas": lambdas, "arms": arms,
            "seeds_per_cell": f"{cells.min()}-{cells.max()}" if cells.min() != cells.max()
            else str(cells.min()), "sweep_params": sweep_params, "partial": partial}
    write_markdown(out, meta, summary, comp, baseline, claim_lambda, plots, conv,
                   required_keys=[s.key for s in REQUIRED], alpha=ALPHA, tail=TAIL)
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    if log_to_parent:
        client.log_artifacts(parent.info.run_id, str(out), artifact_path="report")
    return {"trials": len(trials), "comparisons": len(comp), "out": str(out)}


def check_convergence(client, experiment: str, parent_run_id: str | None = None) -> int:
    """Print the convergence table of the latest sweep in ``experiment``; 0 if every trained
    arm is flat within seed noise, 1 otherwise (an arm that cannot be tested counts as not)."""
    exp, parent = find_parent(client, experiment, parent_run_id)
    trials = check_trials(load_trials(client, exp.experiment_id, parent.info.run_id), experiment)
    conv = convergence_table(return_curves(client, trials))
    if conv.empty:
        raise UsageError(f"--check-convergence: no return curve (eval_curve/return or "
                         f"return_mean) in the trained runs of {experiment!r}")
    print("\n".join(convergence_section(conv, TAIL)))
    return 0 if (conv["flat"] == True).all() else 1  # noqa: E712


def main(argv: list[str]) -> int:
    p = parser("python -m platform.report", __doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment holding the sweep")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default sqlite:///<repo>/mlflow.db)")
    p.add_argument("--baseline-lambda", type=float, default=0.0, help="λ to compare against")
    p.add_argument("--claim-lambda", type=float, default=0.3, help="λ of the claim check")
    p.add_argument("--parent-run-id", default=None, help="sweep parent run (default: latest)")
    p.add_argument("--partial", default=None, metavar="NOTE",
                   help="label the report partial, with this note (e.g. how to finish it)")
    p.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    p.add_argument("--check-convergence", action="store_true",
                   help="only print the convergence table of the sweep's trained arms (no --out "
                        "needed); exit 1 when an arm is not flat within seed noise")
    p.add_argument("--out", default=None, help="output directory (required for the report)")
    a = p.parse_args(argv)
    if a.check_convergence:
        return check_convergence(_client(a.tracking_uri), a.experiment, a.parent_run_id)
    if not a.out:
        raise UsageError("--out: required (the report's output directory)")
    client = _client(a.tracking_uri)
    res = build_report(client, a.experiment, Path(a.out), baseline=a.baseline_lambda,
                       claim_lambda=a.claim_lambda, parent_run_id=a.parent_run_id,
                       log_to_parent=not a.no_log, partial=a.partial)
    print(f"report: {res['out']}/report.md ({res['trials']} trials, {res['comparisons']} comparisons)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
