"""``python -m platform.report --experiment NAME --out DIR``: statistics report of a λ × seed sweep.

Reads the child runs of a sweep (``platform.sweep``) from MLflow and writes ``report.md``,
CSV tables (``summary.csv``, ``comparisons.csv``) and PNG plots (Pareto fronts, training
curves per group, wait-time distributions by group) into ``--out``; the same files are
logged as artifacts (``report/``) of the sweep's parent run.

Statistics (:mod:`platform.stats`): per scenario × λ, mean ± std and a 95% bootstrap CI over
seeds; per λ against ``--baseline-lambda``, Welch's t-test with Bonferroni and Holm
corrections (family = one metric across all scenarios × λ), Cohen's d, and "fairness
improvement %" / "efficiency retention %" with bootstrap CIs. The report says plainly when a
difference is not significant. Claim under test (EquiRL hospital-allocation report): ~25%
fairness improvement at ~98% efficiency for λ=0.3 across four hospitals.
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
from typing import Literal

import numpy as np
import pandas as pd

from base.errors import UsageError

# --- names shared with platform.sweep (one place) ------------------------------------------
PARAM_SCENARIO = "scenario"
PARAM_LAMBDA = "robust_lambda"
PARAM_SEED = "seed"
TAG_ROLE = "equirl.sweep.role"  # "parent" | "trial"
TAG_SWEEP = "equirl.sweep.name"
TAG_TRIAL = "equirl.sweep.trial_id"
EPISODES_ARTIFACT = "eval/episodes.parquet"
EVAL_PREFIX = "eval/"
RETURN_KEY = "eval/return"
CURVE_SUFFIXES = ("/return_per_capita", "/return", "/objective")  # first one present
WAIT_SUFFIX = "/mean_wait"
ALPHA = 0.05


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
    role: Literal["efficiency", "fairness", "other"]
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
    """Utilisation and per-group wait metrics present in the runs (summarised, not tested)."""
    out = []
    for c in sorted(columns):
        if c.startswith(EVAL_PREFIX + "util/"):
            out.append(MetricSpec(c, c[len(EVAL_PREFIX):], "higher", "other"))
        elif c.startswith(EVAL_PREFIX + "group/") and c.endswith(WAIT_SUFFIX):
            out.append(MetricSpec(c, c[len(EVAL_PREFIX):], "lower", "other"))
    return out


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
        row = {"run_id": r.info.run_id, "status": r.info.status,
               "scenario": p.get(PARAM_SCENARIO), "lambda": _float(p.get(PARAM_LAMBDA)),
               "seed": p.get(PARAM_SEED)}
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
    bad_params = [n for n, c in ((PARAM_SCENARIO, "scenario"), (PARAM_LAMBDA, "lambda"))
                  if done[c].isna().any()]
    if bad_params:
        raise UsageError(f"runs lack the params the report needs: {', '.join(bad_params)}")
    missing = []
    for spec in REQUIRED:
        n_missing = int(done[spec.key].isna().sum()) if spec.key in done else len(done)
        if n_missing:
            missing.append(f"{spec.key} (missing in {n_missing} of {len(done)} runs)")
    if missing:
        raise UsageError("runs lack the metrics the report needs: " + "; ".join(missing))
    return done.reset_index(drop=True)


# --- tables --------------------------------------------------------------------------------
def summary_table(trials: pd.DataFrame, specs: list[MetricSpec]) -> pd.DataFrame:
    """Rows: scenario × λ × metric with n, mean, std, 95% bootstrap CI over seeds."""
    rows = []
    for (scenario, lam), g in trials.groupby(["scenario", "lambda"], sort=True):
        for spec in specs:
            if spec.key not in g:
                continue
            s = stats.summarize(g[spec.key].to_numpy())
            rows.append({"scenario": scenario, "lambda": lam, "metric": spec.label, "key": spec.key,
                         "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low,
                         "ci_high": s.ci_high})
    return pd.DataFrame(rows)


def comparison_table(trials: pd.DataFrame, baseline: float) -> pd.DataFrame:
    """Each λ ≠ baseline vs the baseline λ, per scenario and required metric.

    Columns: Welch t and p, Bonferroni/Holm-corrected p (family = one metric across all
    scenarios × λ), Cohen's d (λ minus baseline), and the % change with its CI:
    "improvement" for fairness metrics, "retention" for return.
    """
    rows = []
    for scenario, sc in trials.groupby("scenario", sort=True):
        base = sc[np.isclose(sc["lambda"], baseline)]
        for lam, g in sc.groupby("lambda", sort=True):
            if math.isclose(lam, baseline) or base.empty:
                continue
            for spec in REQUIRED:
                x, b = g[spec.key].to_numpy(), base[spec.key].to_numpy()
                w = stats.welch(x, b)
                kind = "retention" if spec.role == "efficiency" else "improvement"
                if spec.score_of_one:  # improvement = relative reduction of 1 - score
                    ch = stats.relative_change(1 - x, 1 - b, kind=kind, direction="lower")
                else:
                    ch = stats.relative_change(x, b, kind=kind, direction=spec.direction)
                rows.append({"scenario": scenario, "lambda": lam, "metric": spec.label,
                             "key": spec.key, "direction": spec.direction, "n": len(x),
                             "n_baseline": len(b), "mean": float(np.mean(x)),
                             "baseline_mean": float(np.mean(b)), "t": w.statistic,
                             "p": w.pvalue, "cohens_d": stats.cohens_d(x, b), "change": kind,
                             "change_pct": ch.value, "change_ci_low": ch.ci_low,
                             "change_ci_high": ch.ci_high})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for method in ("bonferroni", "holm"):
        df[f"p_{method}"] = np.nan
        for _, idx in df.groupby("key").groups.items():
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


# --- plots ---------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pareto_mask(x: np.ndarray, y: np.ndarray, y_higher: bool) -> np.ndarray:
    """Points not dominated in (x higher, y higher/lower) -- shapes (k,) -> bool (k,)."""
    yy = y if y_higher else -y
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        dominated = (x >= x[i]) & (yy >= yy[i]) & ((x > x[i]) | (yy > yy[i]))
        keep[i] = not dominated.any()
    return keep


def plot_pareto(summary: pd.DataFrame, path: Path) -> Path:
    """Fairness (each fairness metric) vs efficiency (return) per scenario, one point per λ."""
    plt = _plt()
    fair = [s for s in REQUIRED if s.role == "fairness"]
    scenarios = sorted(summary["scenario"].unique())
    fig, axes = plt.subplots(len(scenarios), len(fair), squeeze=False,
                             figsize=(3.6 * len(fair), 3.0 * len(scenarios)))
    for i, sc in enumerate(scenarios):
        ret = summary[(summary.scenario == sc) & (summary.key == RETURN_KEY)].set_index("lambda")
        for j, spec in enumerate(fair):
            ax = axes[i][j]
            f = summary[(summary.scenario == sc) & (summary.key == spec.key)].set_index("lambda")
            lams = sorted(set(ret.index) & set(f.index))
            x, y = ret.loc[lams, "mean"].to_numpy(), f.loc[lams, "mean"].to_numpy()
            ax.errorbar(x, y, xerr=_err(ret.loc[lams]), yerr=_err(f.loc[lams]), fmt="o",
                        color="0.6", ecolor="0.8", zorder=1)
            mask = _pareto_mask(x, y, spec.direction == "higher")
            order = np.argsort(x[mask])
            ax.plot(x[mask][order], y[mask][order], "-o", color="C3", zorder=2, label="Pareto front")
            for lam, xi, yi in zip(lams, x, y):
                ax.annotate(f"λ={lam:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            ax.set_title(f"{sc}: {spec.label} ({spec.direction} is fairer)", fontsize=8)
            ax.set_xlabel("evaluation return (efficiency)", fontsize=8)
            ax.set_ylabel(spec.label, fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _err(frame: pd.DataFrame) -> np.ndarray:
    """Asymmetric CI error bars, shape (2, k); NaN CIs (n < 2) draw none."""
    low = (frame["mean"] - frame["ci_low"]).to_numpy()
    high = (frame["ci_high"] - frame["mean"]).to_numpy()
    return np.nan_to_num(np.vstack([low, high]).clip(min=0))


def training_curves(client, trials: pd.DataFrame) -> pd.DataFrame:
    """Long table scenario, lambda, seed, group, metric, iteration, value.

    Per-group training curves: the env runners' ``group/<g>/return_per_capita`` (mean
    per-capita episode return of group g; ``group/<g>/return`` or the learner's old
    ``group/<g>/objective`` for runs logged before it existed). Histories are deduplicated on the step (= training iteration): a
    replayed iteration after a hard kill keeps its last logged value.
    """
    rows = []
    for r in _rows(trials):
        run = client.get_run(r.run_id)
        keys = [k for k in run.data.metrics if k.startswith("group/") and k.count("/") == 2]
        for suffix in CURVE_SUFFIXES:
            chosen = sorted(k for k in keys if k.endswith(suffix))
            if chosen:
                break
        for key in chosen:
            last: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(r.run_id, key):
                if m.step not in last or m.timestamp >= last[m.step][0]:
                    last[m.step] = (m.timestamp, m.value)
            rows += [{"scenario": r.scenario, "lambda": r.lam, "seed": r.seed,
                      "group": key.split("/")[1], "metric": key.split("/")[2], "iteration": step,
                      "value": v} for step, (_, v) in sorted(last.items())]
    return pd.DataFrame(rows, columns=["scenario", "lambda", "seed", "group", "metric",
                                       "iteration", "value"])


def plot_training_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Rows: scenarios; columns: groups; one line per λ (mean over seeds, ± std band)."""
    plt = _plt()
    scenarios = sorted(curves["scenario"].unique()) or ["(none)"]
    groups = sorted(curves["group"].unique()) or ["(none)"]
    fig, axes = plt.subplots(len(scenarios), len(groups), squeeze=False,
                             figsize=(3.4 * len(groups), 2.8 * len(scenarios)))
    lams = sorted(curves["lambda"].unique())
    cmap = plt.get_cmap("viridis")
    for i, sc in enumerate(scenarios):
        for j, grp in enumerate(groups):
            ax = axes[i][j]
            sub = curves[(curves.scenario == sc) & (curves.group == grp)]
            for k, lam in enumerate(lams):
                agg = sub[sub["lambda"] == lam].groupby("iteration")["value"].agg(["mean", "std"])
                if agg.empty:
                    continue
                color = cmap(k / max(1, len(lams) - 1))
                ax.plot(agg.index, agg["mean"], color=color, label=f"λ={lam:g}", marker=".")
                ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                                agg["mean"] + agg["std"].fillna(0), color=color, alpha=0.15)
            ax.set_title(f"{sc}: group {grp}", fontsize=8)
            ax.set_xlabel("training iteration", fontsize=8)
            metric = ", ".join(sorted(sub["metric"].unique())) or "return"
            ax.set_ylabel(f"group {metric}", fontsize=8)
            ax.tick_params(labelsize=7)
    if lams:
        axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def episode_waits(client, trials: pd.DataFrame) -> pd.DataFrame:
    """Per-episode mean wait by group from each trial's Parquet artifact (long table).

    Falls back to the per-trial ``eval/group/<g>/mean_wait`` summary when a trial has no
    episode artifact. Columns: scenario, lambda, group, wait, source.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in _rows(trials):
            lam = r.lam
            try:
                local = client.download_artifacts(r.run_id, EPISODES_ARTIFACT, tmp)
                ep = pd.read_parquet(local)
            except Exception:  # noqa: BLE001  (no artifact: use the summary metrics)
                ep = None
            if ep is not None:
                for col in [c for c in ep.columns if c.startswith("group/") and c.endswith(WAIT_SUFFIX)]:
                    rows += [{"scenario": r.scenario, "lambda": lam, "group": col.split("/")[1],
                              "wait": float(v), "source": "episodes"} for v in ep[col].dropna()]
                continue
            metrics = trials.loc[trials.run_id == r.run_id].iloc[0]
            for col in [c for c in trials.columns
                        if c.startswith(EVAL_PREFIX + "group/") and c.endswith(WAIT_SUFFIX)]:
                if pd.notna(metrics[col]):
                    rows.append({"scenario": r.scenario, "lambda": lam, "group": col.split("/")[2],
                                 "wait": float(metrics[col]), "source": "trial summary"})
    return pd.DataFrame(rows, columns=["scenario", "lambda", "group", "wait", "source"])


def plot_waits(waits: pd.DataFrame, path: Path) -> Path:
    """Box plots of per-episode mean wait, one panel per scenario, boxes grouped by group × λ."""
    plt = _plt()
    scenarios = sorted(waits["scenario"].unique()) or ["(none)"]
    lams = sorted(waits["lambda"].unique())
    fig, axes = plt.subplots(len(scenarios), 1, squeeze=False,
                             figsize=(max(6, 1.1 * len(lams) * max(1, waits["group"].nunique())),
                                      2.8 * len(scenarios)))
    cmap = plt.get_cmap("viridis")
    for i, sc in enumerate(scenarios):
        ax = axes[i][0]
        sub = waits[waits.scenario == sc]
        groups = sorted(sub["group"].unique())
        width = 0.8 / max(1, len(lams))
        for k, lam in enumerate(lams):
            data = [sub[(sub.group == g) & (sub["lambda"] == lam)]["wait"].to_numpy() for g in groups]
            pos = [gi + (k - (len(lams) - 1) / 2) * width for gi in range(len(groups))]
            bp = ax.boxplot([d if len(d) else [np.nan] for d in data], positions=pos,
                            widths=width * 0.9, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(cmap(k / max(1, len(lams) - 1)))
            ax.plot([], [], "s", color=cmap(k / max(1, len(lams) - 1)), label=f"λ={lam:g}")
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_title(f"{sc}: mean wait per evaluation episode, by group", fontsize=9)
        ax.set_ylabel("mean wait", fontsize=8)
        ax.legend(fontsize=6, ncol=min(6, len(lams)))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- markdown ------------------------------------------------------------------------------
def _fmt(v: float, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{nd}g}" if abs(v) >= 1e4 or (0 < abs(v) < 1e-3) else f"{v:.{nd}f}"


def _p(v: float) -> str:
    return "n/a" if not math.isfinite(v) else ("<0.001" if v < 1e-3 else f"{v:.3f}")


def claim_section(comp: pd.DataFrame, claim_lambda: float, baseline: float) -> list[str]:
    """Plain-language check of '~25% fairness improvement at ~98% efficiency' at ``claim_lambda``."""
    lines = [f"## Claim check: λ={claim_lambda:g} vs λ={baseline:g}", ""]
    sub = comp[np.isclose(comp["lambda"], claim_lambda)] if not comp.empty else comp
    if sub.empty:
        return lines + [f"λ={claim_lambda:g} was not part of this sweep; no claim check.", ""]
    lines += ["The hospital technical report claims about **+25% fairness** at about **98% "
              "efficiency retention** for λ=0.3. Measured here (95% bootstrap CIs over seeds; "
              "Holm-corrected Welch p-values):", "",
              "| scenario | metric | change | 95% CI | Holm p | verdict |", "|---|---|---|---|---|---|"]
    for r in _rows(sub):
        name = "efficiency retention" if r.change == "retention" else f"{r.metric} improvement"
        lines.append(f"| {r.scenario} | {name} | {_fmt(r.change_pct, 1)}% | "
                     f"[{_fmt(r.change_ci_low, 1)}, {_fmt(r.change_ci_high, 1)}]% | "
                     f"{_p(r.p_holm)} | {r.verdict} |")
    lines.append("")
    fair = sub[sub["change"] == "improvement"]
    eff = sub[sub["change"] == "retention"]
    n_sig = int((fair["verdict"] == "significantly better").sum())
    reaching = int(((fair["change_pct"] >= 25) & fair["significant_holm"]).sum())
    kept = int((eff["change_ci_low"] >= 98).sum())
    lines += [
        f"- Fairness: {n_sig} of {len(fair)} scenario × metric comparisons are significantly "
        f"better after Holm correction; {reaching} show a significant improvement of at least "
        f"25%. The other {len(fair) - n_sig} are **not significant** (or worse): the data do "
        "not support an improvement there.",
        f"- Efficiency: in {kept} of {len(eff)} scenarios the lower CI bound of return "
        "retention is at least 98%.",
        "- Verdict: the claim is "
        + ("**reproduced**" if reaching == len(fair) and kept == len(eff) and len(fair) else
           "**not reproduced** as stated" + (" (only partially supported)" if n_sig else ""))
        + " by this sweep.", ""]
    return lines


def write_markdown(out: Path, meta: dict, summary: pd.DataFrame, comp: pd.DataFrame,
                   baseline: float, claim_lambda: float, plots: dict[str, str]) -> Path:
    lines = [f"# Group-robust PPO sweep report: {meta['experiment']}", ""]
    if meta.get("partial"):
        lines += [f"> **PARTIAL REPORT**: {meta['partial']}", ""]
    lines += [f"- sweep parent run: `{meta['parent_run_id']}` ({meta.get('sweep_name', '')})",
              f"- trials: {meta['n_finished']} finished, {meta['n_other']} not finished "
              "(excluded)", f"- scenarios: {', '.join(meta['scenarios'])}",
              f"- λ values: {', '.join(f'{x:g}' for x in meta['lambdas'])}; baseline λ={baseline:g}",
              f"- seeds per cell: {meta['seeds_per_cell']}",
              *(f"- {k}: {v}" for k, v in meta.get("sweep_params", {}).items()), ""]
    lines += claim_section(comp, claim_lambda, baseline)
    lines += ["## Per scenario × λ (mean ± std, 95% bootstrap CI over seeds)", "",
              "| scenario | λ | metric | n | mean ± std | 95% CI |", "|---|---|---|---|---|---|"]
    for r in _rows(summary):
        lines.append(f"| {r.scenario} | {r.lam:g} | {r.metric} | {r.n} | "
                     f"{_fmt(r.mean)} ± {_fmt(r.std)} | [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] |")
    lines += ["", f"## Each λ against λ={baseline:g}", "",
              "Welch's t-test (two-sided); p-values corrected with Bonferroni and Holm within "
              "each metric across all scenarios × λ; Cohen's d = (λ − baseline)/pooled sd. "
              "Fairness metrics are scores in [0, 1] (1 = fair); fairness improvement % is the "
              "relative reduction of the unfairness 1 − score against the baseline (positive = "
              "fairer); "
              "efficiency retention % is 100·(1 + Δreturn/|baseline return|). "
              f"Significance level {ALPHA} after Holm correction.", "",
              "| scenario | λ | metric | mean (baseline) | d | p | p Bonf. | p Holm | change % [95% CI] | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in _rows(comp):
        lines.append(
            f"| {r.scenario} | {r.lam:g} | {r.metric} | {_fmt(r.mean)} "
            f"({_fmt(r.baseline_mean)}) | {_fmt(r.cohens_d, 2)} | {_p(r.p)} | "
            f"{_p(r.p_bonferroni)} | {_p(r.p_holm)} | {r.change} {_fmt(r.change_pct, 1)} "
            f"[{_fmt(r.change_ci_low, 1)}, {_fmt(r.change_ci_high, 1)}] | {r.verdict} |")
    if not comp.empty:
        n_sig = int(comp["significant_holm"].sum())
        lines += ["", f"{n_sig} of {len(comp)} comparisons are significant after Holm correction; "
                  f"the remaining {len(comp) - n_sig} are **not significant** at {ALPHA}."]
    lines += ["", "## Plots", ""]
    lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in plots.items()]
    lines += ["## Files", "", "- `summary.csv`: the per scenario × λ table above (all metrics, "
              "including utilisation and per-group waits).",
              "- `comparisons.csv`: the tests above with t statistics, p-values and CIs.",
              "- `curves.csv`, `waits.csv`: data behind the training-curve and wait plots.", "",
              f"Regenerate: `python -m platform.report --experiment {meta['experiment']} "
              f"--baseline-lambda {baseline:g} --out DIR`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# --- entry point ---------------------------------------------------------------------------
def build_report(client, experiment: str, out: Path, *, baseline: float = 0.0,
                 claim_lambda: float = 0.3, parent_run_id: str | None = None,
                 log_to_parent: bool = True, partial: str | None = None) -> dict:
    """Write report.md, CSVs and PNGs to ``out`` (and to the parent run). Returns a summary."""
    exp, parent = find_parent(client, experiment, parent_run_id)
    all_trials = load_trials(client, exp.experiment_id, parent.info.run_id)
    trials = check_trials(all_trials, experiment)
    lambdas = sorted(trials["lambda"].unique())
    if not any(math.isclose(x, baseline) for x in lambdas):
        raise UsageError(f"--baseline-lambda: {baseline:g} is not in the sweep; λ values: "
                         f"{', '.join(f'{x:g}' for x in lambdas)}")
    specs = list(REQUIRED) + optional_specs(trials.columns)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_table(trials, specs)
    comp = comparison_table(trials, baseline)
    curves = training_curves(client, trials)
    waits = episode_waits(client, trials)
    summary.to_csv(out / "summary.csv", index=False)
    comp.to_csv(out / "comparisons.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    waits.to_csv(out / "waits.csv", index=False)
    plots = {"Fairness vs efficiency (Pareto front per scenario)":
             plot_pareto(summary, out / "pareto.png").name,
             "Training curves per group": plot_training_curves(curves, out / "training_curves.png").name,
             "Wait-time distributions by group": plot_waits(waits, out / "wait_times.png").name}
    cells = trials.groupby(["scenario", "lambda"]).size()
    sweep_params = {k: v for k, v in parent.data.params.items()
                    if k in ("iterations", "eval_episodes", "train_batch_size", "algorithm")}
    meta = {"experiment": experiment, "parent_run_id": parent.info.run_id,
            "sweep_name": parent.data.tags.get(TAG_SWEEP, ""), "n_finished": len(trials),
            "n_other": len(all_trials) - len(trials),
            "scenarios": sorted(trials["scenario"].unique()), "lambdas": lambdas,
            "seeds_per_cell": f"{cells.min()}-{cells.max()}" if cells.min() != cells.max()
            else str(cells.min()), "sweep_params": sweep_params, "partial": partial}
    write_markdown(out, meta, summary, comp, baseline, claim_lambda, plots)
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    if log_to_parent:
        client.log_artifacts(parent.info.run_id, str(out), artifact_path="report")
    return {"trials": len(trials), "comparisons": len(comp), "out": str(out)}


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
    p.add_argument("--out", required=True, help="output directory")
    a = p.parse_args(argv)
    client = _client(a.tracking_uri)
    res = build_report(client, a.experiment, Path(a.out), baseline=a.baseline_lambda,
                       claim_lambda=a.claim_lambda, parent_run_id=a.parent_run_id,
                       log_to_parent=not a.no_log, partial=a.partial)
    print(f"report: {res['out']}/report.md ({res['trials']} trials, {res['comparisons']} comparisons)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
