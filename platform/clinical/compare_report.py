"""The clinical comparison's report (``python -m platform.clinical.compare``): tables in the
FairGRPO paper's columns, CIs over seeds, Welch tests with Holm's correction against FairGRPO,
the benchmark's targets for its supervised start, and the gap / accuracy per training step.

Inputs are plain tables the runner wrote (``runs.csv``: one row per algorithm x seed with the
final held-out metrics; ``history.csv``: every held-out evaluation; ``start``: the sft
model's evaluation), so the report regenerates from them without MLflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The paper's columns (arXiv 2510.19893, Table: PP / EOD / σF1 / ΔF1 / F1 / Acc), then ES-F1.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("PP", "fairness/pp_gap", "lower"), ("EOD", "fairness/eod", "lower"),
    ("σF1", "fairness/f1_std", "lower"), ("ΔF1", "fairness/f1_gap", "lower"),
    ("F1", "overall/f1", "higher"), ("Acc", "overall/accuracy", "higher"),
    ("ES-F1", "fairness/es_f1", "higher"))
EXTRA = ("eval/accuracy", "eval/top_answer_share", "eval/invalid_rate", "reward/mean")
KEYS = tuple(k for _, k, _ in COLUMNS) + EXTRA
HISTORY_KEYS = ("fairness/f1_gap", "fairness/pp_gap", "eval/accuracy", "overall/f1")
REFERENCE = "fairgrpo"

# MedGemma-4B, as a summary of the paper reports them (PP, EOD and Acc in percent).
PAPER_MEDGEMMA = {
    "grpo": (22.42, 6.476, .0418, .0795, .3123, 80.02),
    "grpo-dro": (16.04, 7.367, .0447, .0871, .3271, 81.19),
    "fairgrpo": (11.67, 6.663, .0383, .0721, .3218, 81.83),
    "fairgrpo-nd": (25.15, 11.56, .0547, .1067, .3513, 79.23),
}
Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 5% test, 80% power
TAIL_EVALS = 4  # the tail view: each run's mean over its last evaluations (less evaluation noise)
TAIL_KEYS = (("ΔF1", "fairness/f1_gap", "lower"), ("PP", "fairness/pp_gap", "lower"),
             ("exact-match acc", "eval/accuracy", "higher"))


def tail_means(history: pd.DataFrame, k: int = TAIL_EVALS) -> pd.DataFrame:
    """One row per (algorithm, seed): the mean of each history key over the run's last ``k``
    evaluations after the start (step > 0), and the steps they cover."""
    h = history[history["step"] > 0]
    if h.empty:
        return pd.DataFrame(columns=["algorithm", "seed"])
    rows = []
    for (alg, seed), sub in h.groupby(["algorithm", "seed"], sort=False):
        steps = sorted(sub["step"].unique())[-k:]
        last = sub[sub["step"].isin(steps)]
        rows.append({"algorithm": alg, "seed": seed, "first_step": steps[0], "last_step": steps[-1],
                     **last.groupby("key")["value"].mean().to_dict()})
    return pd.DataFrame(rows)


def tail_tests(tail: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Welch tests of FairGRPO against each baseline on the tail means, Holm over baselines."""
    from platform.stats import adjust, welch

    if tail.empty or REFERENCE not in set(tail["algorithm"]):
        return {}
    ref = tail[tail["algorithm"] == REFERENCE]
    others = [a for a in dict.fromkeys(tail["algorithm"]) if a != REFERENCE]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for _, k, _ in TAIL_KEYS:
        if k not in tail:
            continue
        tests = [welch(ref[k].to_numpy(float), tail.loc[tail["algorithm"] == a, k].to_numpy(float))
                 for a in others]
        holm = adjust([t.pvalue for t in tests], "holm")
        out[k] = {a: {"diff": float(ref[k].mean() - tail.loc[tail["algorithm"] == a, k].mean()),
                      "p_holm": float(p)} for a, t, p in zip(others, tests, holm)}
    return out


def summarise(rows: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Per algorithm and key: n, mean, std, 95% bootstrap CI over seeds; Welch tests of
    FairGRPO against each baseline per key, Holm-adjusted over the baselines; the minimum
    detectable difference (two-sided 5%, power 80%) of each key from the seeds' spread."""
    from platform.stats import adjust, summarize, welch

    algs = list(dict.fromkeys(rows["algorithm"]))
    out: dict[str, Any] = {"algorithms": {}, "tests": {}, "mdd": {}}
    for a in algs:
        sub = rows[rows["algorithm"] == a]
        out["algorithms"][a] = {}
        for k in KEYS + ("wall_s",):
            if k not in sub:
                continue
            s = summarize(sub[k].to_numpy(dtype=float))
            out["algorithms"][a][k] = {"n": s.n, "mean": s.mean, "std": s.std,
                                       "ci_low": s.ci_low, "ci_high": s.ci_high}
    if REFERENCE in algs:
        ref = rows[rows["algorithm"] == REFERENCE]
        others = [a for a in algs if a != REFERENCE]
        for _, k, _ in COLUMNS:
            tests = [welch(ref[k].to_numpy(dtype=float),
                           rows.loc[rows["algorithm"] == a, k].to_numpy(dtype=float)) for a in others]
            holm = adjust([t.pvalue for t in tests], "holm")
            out["tests"][k] = {a: {"diff": float(ref[k].mean() - rows.loc[rows["algorithm"] == a, k].mean()),
                                   "p": t.pvalue, "p_holm": float(p),
                                   "significant": bool(p < alpha)}
                               for a, t, p in zip(others, tests, holm)}
    for _, k, _ in COLUMNS:
        sds = [out["algorithms"][a][k]["std"] for a in algs if k in out["algorithms"][a]]
        ns = [out["algorithms"][a][k]["n"] for a in algs if k in out["algorithms"][a]]
        sd = float(np.sqrt(np.nanmean(np.square(sds)))) if sds else math.nan
        n = min(ns) if ns else 0
        out["mdd"][k] = {"pooled_sd": sd, "n": n,
                         "mdd": (Z_ALPHA + Z_POWER) * sd * math.sqrt(2.0 / n) if n else math.nan}
    return out


def targets(start: dict[str, float], rows: pd.DataFrame, hard_groups: list[str]) -> list[tuple]:
    """The benchmark's targets (issue: a benchmark that measures something): name, measured,
    target, met."""
    maj = [v for k, v in start.items() if k.startswith("eval/by_group/") and k.endswith("/accuracy")
           and k.split("/")[2] not in hard_groups and k.split("/")[2] != "unknown"]
    hard = [v for k, v in start.items() if k.startswith("eval/by_group/") and k.endswith("/accuracy")
            and k.split("/")[2] in hard_groups]
    maj_acc = float(np.mean(maj)) if maj else math.nan
    out = [("sft held-out accuracy, majority groups (mean over groups)", maj_acc, ">= 0.75", maj_acc >= 0.75),
           ("sft held-out accuracy, hard groups (mean over groups)", float(np.mean(hard)) if hard else math.nan,
            "below the majority's", bool(hard) and float(np.mean(hard)) < maj_acc),
           ("ΔF1 at the start of RL", start.get("fairness/f1_gap", math.nan), ">= 0.15",
            start.get("fairness/f1_gap", 0.0) >= 0.15),
           ("most frequent answer's share at the start", start.get("eval/top_answer_share", math.nan),
            "< 0.6 (answers spread)", start.get("eval/top_answer_share", 1.0) < 0.6)]
    grpo = rows.loc[rows["algorithm"] == "grpo", "eval/accuracy"]
    if len(grpo):
        from platform.stats import summarize

        gain = summarize(grpo.to_numpy(dtype=float) - start.get("eval/accuracy", math.nan))
        out.append(("GRPO's held-out accuracy gain over the sft start", gain.mean,
                    f"> 0 (95% CI [{gain.ci_low:.3f}, {gain.ci_high:.3f}])",
                    bool(gain.ci_low > 0)))
    return out


def _fmt(m: dict[str, Any], k: str) -> str:
    if k not in m or not np.isfinite(m[k]["mean"]):
        return "n/a"
    v = m[k]
    ci = "" if not np.isfinite(v["ci_low"]) else f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
    return f"{v['mean']:.3f}{ci}"


def write_report(out: Path, rows: pd.DataFrame, history: pd.DataFrame, start: dict[str, float],
                 meta: dict[str, Any]) -> None:
    """``summary.json``, ``curves.png`` and ``README.md`` (the generated part) into ``out``."""
    from platform.report_plots import plot_step_curves

    summary = summarise(rows)
    checks = targets(start, rows, meta.get("hard_groups", [])) if start else []
    tail = tail_means(history) if not history.empty else pd.DataFrame()
    tail_summary = {}
    if not tail.empty:
        from dataclasses import asdict
        from platform.stats import summarize

        for a, sub in tail.groupby("algorithm", sort=False):
            tail_summary[a] = {k: asdict(summarize(sub[k].to_numpy(float)))
                               for _, k, _ in TAIL_KEYS if k in sub}
    ttests = tail_tests(tail) if not tail.empty else {}
    (out / "summary.json").write_text(json.dumps(
        {"meta": meta, "start": start, "targets": checks, **summary,
         "tail": {"evaluations": TAIL_EVALS, "algorithms": tail_summary, "tests": ttests}},
        indent=2, default=float))
    if not history.empty:
        plot_step_curves(history.rename(columns={"algorithm": "arm", "step": "iteration"}),
                         [("fairness/f1_gap", "ΔF1 (held-out) ↓"), ("fairness/pp_gap", "PP gap ↓"),
                          ("eval/accuracy", "held-out accuracy ↑")], out / "curves.png",
                         arms=list(dict.fromkeys(rows["algorithm"])))
    lines = [f"# {meta['title']}", "",
             f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}); "
             f"{meta['wall_min']:.1f} min in all.", "", meta["setup"], "",
             "Mean [95% bootstrap CI over seeds] of the final held-out evaluation; the paper's "
             "definitions (`docs/fairness-metrics.md`: each attribute on its own, per data "
             "source, then averaged; PP = FDR gap, EOD = TPR gap, Acc = mean one-vs-rest accuracy).", "",
             "| algorithm | seeds | " + " | ".join(f"{c} {'↓' if d == 'lower' else '↑'}" for c, _, d in COLUMNS)
             + " | exact-match acc | top-answer share |",
             "|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for a, m in summary["algorithms"].items():
        n = m[COLUMNS[0][1]]["n"] if COLUMNS[0][1] in m else 0
        lines.append(f"| {a} | {n} | " + " | ".join(_fmt(m, k) for _, k, _ in COLUMNS)
                     + f" | {_fmt(m, 'eval/accuracy')} | {_fmt(m, 'eval/top_answer_share')} |")
    if start:
        lines.append("| (sft start) | 1 | " + " | ".join(
            f"{start.get(k, math.nan):.3f}" for _, k, _ in COLUMNS)
            + f" | {start.get('eval/accuracy', math.nan):.3f} | "
            f"{start.get('eval/top_answer_share', math.nan):.3f} |")
    if summary["tests"]:
        base = list(next(iter(summary["tests"].values())))
        lines += ["", f"FairGRPO minus baseline, Welch's t-test p-value (Holm-adjusted over the "
                  f"{len(base)} baselines per column); * = significant at 0.05:", "",
                  "| baseline | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for b in base:
            cells = []
            for _, k, _ in COLUMNS:
                t = summary["tests"][k][b]
                cells.append(f"{t['diff']:+.3f} (p={t['p_holm']:.3f}){'*' if t['significant'] else ''}")
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if tail_summary:
        first, last = int(tail["first_step"].min()), int(tail["last_step"].max())
        lines += ["", f"The same, each run's mean over its last {TAIL_EVALS} evaluations (steps "
                  f"{first}-{last}): less noise from the one held-out split than the final step "
                  "alone. FairGRPO minus baseline, Holm-adjusted Welch p in brackets:", "",
                  "| algorithm | " + " | ".join(f"{c} {'↓' if d == 'lower' else '↑'}"
                                                for c, _, d in TAIL_KEYS) + " |",
                  "|---|" + "---|" * len(TAIL_KEYS)]
        for a, m in tail_summary.items():
            cells = []
            for _, k, _ in TAIL_KEYS:
                v = m.get(k)
                if v is None:
                    cells.append("n/a")
                    continue
                ci = f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if np.isfinite(v["ci_low"]) else ""
                t = ttests.get(k, {}).get(a)
                cells.append(f"{v['mean']:.3f}{ci}" + (f" ({t['diff']:+.3f}, p={t['p_holm']:.3f})"
                                                       if t else ""))
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "Minimum detectable difference between two methods (two-sided 5%, power 80%, "
              "the seeds' pooled sd): " + ", ".join(
                  f"{c} {summary['mdd'][k]['mdd']:.3f}" for c, k, _ in COLUMNS
                  if np.isfinite(summary["mdd"][k]["mdd"])) + "."]
    if checks:
        lines += ["", "Targets of the benchmark:", "", "| target | measured | wanted | met |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {value:.3f} | {want} | {'yes' if ok else '**no**'} |"
                  for name, value, want, ok in checks]
    lines += ["", "The paper's MedGemma-4B figures (as a summary of the paper reports them; PP, "
              "EOD and Acc in percent), for the direction of each difference only: a tiny model "
              "on synthetic images is not MedGemma on clinical data.", "",
              "| method | PP | EOD | σF1 | ΔF1 | F1 | Acc |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | " + " | ".join(str(v) for v in vals) + " |" for a, vals in PAPER_MEDGEMMA.items()]
    if not history.empty:
        lines += ["", "![gap and accuracy per step](curves.png)", "",
                  "`curves.png`: held-out ΔF1, PP gap and accuracy at each evaluation (mean ± sd "
                  "over seeds; step 0 = the sft start)."]
    lines += ["", "Per-run values: `runs.csv`; every evaluation: `history.csv`; all of the above: "
              "`summary.json`.", ""]
    reading = out / "reading.md"  # hand-written, kept across regenerations
    if reading.is_file():
        lines += [reading.read_text().rstrip(), ""]
    (out / "README.md").write_text("\n".join(lines))
