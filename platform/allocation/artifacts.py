"""What an allocation run's MLflow page shows beside its metrics: per-group tables, a figure, a summary.

* at each greedy evaluation (every ``eval_every`` iterations and the final one),
  ``eval/by_group/step-<N>.csv``: one row per patient group with its patients over the
  evaluation episodes and, as means over the episodes, its per-capita return and mean wait
  (each with a 95% bootstrap CI over episodes), success and treatment rates
  (:func:`group_table`);
* at the end of the run, ``eval/by_group.png`` (each group's mean wait and success rate over
  the evaluations of this process) and ``summary.md`` (return, the fairness scores and the
  per-capita gap with CIs over episodes, then the last per-group table).

Only aggregates, as everywhere. A group with fewer patients over the evaluation episodes than
``min_size`` (default 10) keeps its count but not its rates (``withheld``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: per-episode group columns (``group/<name>/<stat>``) -> table column
STATS = {"return_per_capita": "return_per_capita", "mean_wait": "mean_wait",
         "success_rate": "success_rate", "treat_rate": "treat_rate"}
WITH_CI = ("return_per_capita", "mean_wait")
RATES = tuple(STATS.values()) + tuple(f"{c}_{s}" for c in WITH_CI for s in ("ci_low", "ci_high"))
#: headline rows of the summary: label, per-episode column ("gap": computed)
HEADLINE = (("return", "return"), ("per-capita gap (best - worst group)", "gap"),
            ("DP score", "fairness/dp_score"), ("EO score", "fairness/eo_score"),
            ("WTE score", "fairness/wte_score"), ("individual fairness", "fairness/individual_score"))


def group_names(episodes: pd.DataFrame) -> list[str]:
    """The groups of an evaluation's episode rows (``group/<name>/...`` columns)."""
    return sorted({c.split("/")[1] for c in episodes.columns
                   if c.startswith("group/") and c.count("/") == 2})


def _ci(values) -> tuple[float, float, float]:
    from platform.stats import summarize

    s = summarize(values, n_resamples=1000)
    return s.mean, s.ci_low, s.ci_high


def group_table(episodes: pd.DataFrame, step: int, min_size: int = 10) -> pd.DataFrame:
    """One row per group of the evaluation ``episodes`` (one row per episode)."""
    rows = []
    for g in group_names(episodes):
        n_col = f"group/{g}/n"
        row: dict[str, Any] = {"step": step, "group": g,
                               "patients": float(episodes[n_col].sum()) if n_col in episodes
                               else float("nan")}
        for src, dst in STATS.items():
            col = f"group/{g}/{src}"
            if col not in episodes:
                continue
            if dst in WITH_CI:
                row[dst], row[f"{dst}_ci_low"], row[f"{dst}_ci_high"] = _ci(episodes[col])
            else:
                row[dst] = float(episodes[col].mean())
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    frame["withheld"] = ~(frame["patients"] >= min_size)  # unknown size: withheld too
    frame.loc[frame["withheld"], [c for c in RATES if c in frame]] = float("nan")
    return frame


def headline(episodes: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """label -> (mean, CI low, CI high) over the episodes; the gap is each episode's best minus
    worst group per-capita return."""
    pc = [c for c in episodes.columns if c.startswith("group/") and c.endswith("/return_per_capita")]
    out = {}
    for label, col in HEADLINE:
        if col == "gap":
            if len(pc) < 2:
                continue
            values = episodes[pc].max(axis=1) - episodes[pc].min(axis=1)
        elif col in episodes:
            values = episodes[col]
        else:
            continue
        out[label] = _ci(values)
    return out


def log_evaluation(episodes: pd.DataFrame, step: int, min_size: int = 10) -> pd.DataFrame:
    """Log the evaluation's per-group table as ``eval/by_group/step-<N>.csv``; return it."""
    import mlflow

    table = group_table(episodes, step, min_size)
    if len(table):
        mlflow.log_text(table.to_csv(index=False), f"eval/by_group/step-{step:06d}.csv")
    return table


def _figure(tables: pd.DataFrame) -> bytes:
    from platform.report_plots import group_panels_png

    return group_panels_png(tables, [("mean_wait", "greedy evaluation: mean wait per group"),
                                     ("success_rate", "greedy evaluation: success rate per group")],
                            "training iteration")


def _cell(value: float) -> str:
    return "withheld" if value != value else f"{value:.3f}"


def summary_markdown(title: str, episodes: pd.DataFrame, table: pd.DataFrame,
                     min_size: int = 10) -> str:
    lines = [f"# {title}", "",
             f"Last greedy evaluation: {len(episodes)} episodes on the evaluation seeds; means "
             "with 95% bootstrap CIs over episodes (docs/allocation.md). Fairness scores: "
             "higher is fairer.", "", "| metric | value [95% CI] |", "|---|---|"]
    for label, (mean, lo, hi) in headline(episodes).items():
        ci = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        lines.append(f"| {label} | {mean:.3f}{ci} |")
    if len(table):
        lines += ["", f"Per group (patients over the episodes; rates of groups under {min_size} "
                  "patients are withheld):", "",
                  "| group | patients | per-capita return [95% CI] | mean wait [95% CI] "
                  "| success rate | treat rate |", "|---|---|---|---|---|---|"]
        for _, r in table.iterrows():
            def with_ci(col: str) -> str:
                if col not in r or r[col] != r[col]:
                    return "withheld" if r.get("withheld") else "n/a"
                return f"{r[col]:.3f} [{r[col + '_ci_low']:.3f}, {r[col + '_ci_high']:.3f}]"

            lines.append(f"| {r['group']} | {r['patients']:.0f} | {with_ci('return_per_capita')} "
                         f"| {with_ci('mean_wait')} | {_cell(r.get('success_rate', np.nan))} "
                         f"| {_cell(r.get('treat_rate', np.nan))} |")
    lines += ["", "![per-group mean wait and success rate](eval/by_group.png)", ""]
    return "\n".join(lines)


def log_summary(title: str, tables: list[pd.DataFrame], episodes: pd.DataFrame,
                min_size: int = 10) -> None:
    """At the end of a run: ``eval/by_group.png`` and ``summary.md``."""
    import tempfile
    from pathlib import Path

    import mlflow

    frames = [t for t in tables if len(t)]
    if not frames:
        return
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "by_group.png"
        png.write_bytes(_figure(pd.concat(frames, ignore_index=True)))
        mlflow.log_artifact(str(png), artifact_path="eval")
    mlflow.log_text(summary_markdown(title, episodes, frames[-1], min_size), "summary.md")
