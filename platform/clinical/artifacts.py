"""What a clinical run's MLflow page shows beside its metrics: per-group tables, a figure, a summary.

* at each evaluation, ``eval/by_group/step-<N>.csv``: one row per intersectional group with
  its held-out size, exact-match accuracy and the report's F1 / TPR / FDR
  (:func:`group_table`);
* at the end of the run, ``eval/by_group.png`` (each group's accuracy and F1 over the
  evaluations of this process) and ``summary.md`` (the headline gaps with their CIs and the
  last per-group table).

Only aggregates, as everywhere: group sizes and rates, no rows. A group with fewer held-out
patients than ``min_size`` (``report_min_group_size``, default 10) keeps its size but not its
rates in the tables, the figure and the summary: ``withheld`` is true and the rate cells are
empty, since a rate over a handful of patients is close to patient-level data (the logged
metrics and the gaps still use every group). The group names are the readable ones
(``F|>75``), not the MLflow-cleaned metric keys.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

HEADLINE = (("PP gap", "fairness/pp_gap"), ("EOD", "fairness/eod"), ("σF1", "fairness/f1_std"),
            ("ΔF1", "fairness/f1_gap"), ("F1", "overall/f1"), ("Acc (one-vs-rest)", "overall/accuracy"),
            ("ES-F1", "fairness/es_f1"), ("exact-match accuracy", "eval/accuracy"))


RATES = ("accuracy", "f1", "tpr", "fdr")


def group_table(metrics: dict[str, float], step: int, min_size: int = 1) -> pd.DataFrame:
    """One row per intersectional group of an evaluation's metrics; the rates of a group
    smaller than ``min_size`` (or of unknown size) are withheld."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith("eval/by_group/") and key.endswith(("/accuracy", "/n")):
            group, stat = key[len("eval/by_group/"):].rsplit("/", 1)
            rows.setdefault(group, {})[stat] = value  # "n" counts the unknown group too
        elif key.startswith("fairness/by_group/") and "&" in key.split("/")[2]:
            group = key.split("/")[2].split("=", 1)[1]
            stat = key.rsplit("/", 1)[1]
            if stat in ("n", "f1", "tpr", "fdr"):
                rows.setdefault(group, {})[stat] = value
    frame = pd.DataFrame([{"step": step, "group": g, **v} for g, v in sorted(rows.items())])
    if not len(frame):
        return frame
    cols = [c for c in ("step", "group", "n", *RATES) if c in frame]
    frame = frame[cols].copy()
    sizes = frame["n"] if "n" in frame else pd.Series(float("nan"), index=frame.index)
    frame["withheld"] = ~(sizes >= min_size)  # NaN size: withheld too
    frame.loc[frame["withheld"], [c for c in RATES if c in frame]] = float("nan")
    return frame


def log_evaluation(metrics: dict[str, float], step: int, min_size: int = 1) -> pd.DataFrame:
    """Log the evaluation's per-group table as ``eval/by_group/step-<N>.csv``; return it."""
    import mlflow

    table = group_table(metrics, step, min_size)
    if len(table):
        mlflow.log_text(table.to_csv(index=False), f"eval/by_group/step-{step:06d}.csv")
    return table


def _figure(tables: pd.DataFrame) -> bytes:
    from platform.report_plots import group_panels_png

    return group_panels_png(tables, [(c, f"held-out {c} per group") for c in ("accuracy", "f1")],
                            "training step")


def headline_table(metrics: dict[str, float]) -> list[str]:
    """Markdown rows of the headline metrics, each with its bootstrap CI when logged (also
    ``platform.evaluate``'s report)."""
    def cell(key: str) -> str:
        v = metrics.get(key)
        if v is None or not math.isfinite(v):
            return "n/a"
        lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

    return ["| metric | value [95% CI] |", "|---|---|"] + [
        f"| {name} | {cell(key)} |" for name, key in HEADLINE]


def _cell(column: str, value: Any) -> str:
    if column == "n":
        return f"{value:.0f}" if value == value else "?"
    return "withheld" if value != value else f"{value:.3f}"  # NaN: withheld


def summary_markdown(title: str, last: dict[str, float], table: pd.DataFrame,
                     min_size: int = 1) -> str:
    lines = [f"# {title}", "", "Last held-out evaluation; the FairGRPO authors' definitions "
             "(docs/fairness-metrics.md), 95% bootstrap CIs over held-out rows where logged.", "",
             *headline_table(last)]
    if len(table):
        cols = [c for c in table.columns if c not in ("step", "withheld")]
        note = (f"; the rates of groups under {min_size} patients are withheld (privacy)"
                if min_size > 1 else "")
        lines += ["", f"Per group (sex | age band), held-out{note}:", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in table.iterrows():
            cells = [str(row["group"]).replace("|", "\\|")] + [_cell(c, row[c]) for c in cols[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![per-group accuracy and F1](eval/by_group.png)", ""]
    return "\n".join(lines)


def log_summary(title: str, tables: list[pd.DataFrame], last: dict[str, float],
                min_size: int = 1) -> None:
    """At the end of a run: ``eval/by_group.png`` and ``summary.md``."""
    import mlflow

    frames = [t for t in tables if len(t)]
    if not frames:
        return
    import tempfile
    from pathlib import Path

    all_tables = pd.concat(frames, ignore_index=True)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "by_group.png"
        png.write_bytes(_figure(all_tables))
        mlflow.log_artifact(str(png), artifact_path="eval")
    mlflow.log_text(summary_markdown(title, last, frames[-1], min_size), "summary.md")
