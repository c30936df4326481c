"""The sweep report's ``report.md`` (:mod:`platform.report`): the claim check, trained PPO
against the rules, convergence, and the summary and comparison tables, as Markdown lines
built from the report's tables (no MLflow, no statistics computed here).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def _fmt(v: float, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{nd}g}" if abs(v) >= 1e4 or (0 < abs(v) < 1e-3) else f"{v:.{nd}f}"


def _p(v: float) -> str:
    return "n/a" if not math.isfinite(v) else ("<0.001" if v < 1e-3 else f"{v:.3f}")


def claim_section(comp: pd.DataFrame, claim_lambda: float, baseline: float,
                  required_keys) -> list[str]:
    """Plain-language check of '~25% fairness improvement at ~98% efficiency' at
    ``claim_lambda``, for each robust_mode swept at that λ."""
    lines = [f"## Claim check: λ={claim_lambda:g} vs λ={baseline:g}", ""]
    required = set(required_keys)
    sub = comp[(comp["kind"] == "lambda") & np.isclose(comp["lambda"], claim_lambda)
               & comp["key"].isin(required)] if not comp.empty else comp
    if sub.empty:
        return lines + [f"λ={claim_lambda:g} was not part of this sweep; no claim check.", ""]
    lines += ["The hospital technical report claims about **+25% fairness** at about **98% "
              "efficiency retention** for λ=0.3. Measured here (95% bootstrap CIs over seeds; "
              "Holm-corrected Welch p-values):", ""]
    arms = list(dict.fromkeys(sub["arm"]))
    for arm in arms:
        part = sub[sub["arm"] == arm]
        if len(arms) > 1:
            lines += [f"### {arm}", ""]
        lines += ["| scenario | metric | change | 95% CI | Holm p | verdict |",
                  "|---|---|---|---|---|---|"]
        for r in part.itertuples(index=False):
            name = "efficiency retention" if r.change == "retention" else f"{r.metric} improvement"
            lines.append(f"| {r.scenario} | {name} | {_fmt(r.change_pct, 1)}% | "
                         f"[{_fmt(r.change_ci_low, 1)}, {_fmt(r.change_ci_high, 1)}]% | "
                         f"{_p(r.p_holm)} | {r.verdict} |")
        lines.append("")
        fair = part[part["change"] == "improvement"]
        eff = part[part["change"] == "retention"]
        n_sig = int((fair["verdict"] == "significantly better").sum())
        reaching = int(((fair["change_pct"] >= 25) & fair["significant_holm"]).sum())
        kept = int((eff["change_ci_low"] >= 98).sum())
        lines += [
            f"- Fairness: {n_sig} of {len(fair)} scenario × metric comparisons are significantly "
            f"better after Holm correction; {reaching} show a significant improvement of at "
            f"least 25%. The other {len(fair) - n_sig} are **not significant** (or worse): the "
            "data do not support an improvement there.",
            f"- Efficiency: in {kept} of {len(eff)} scenarios the lower CI bound of return "
            "retention is at least 98%.",
            f"- Verdict ({arm}): the claim is "
            + ("**reproduced**" if reaching == len(fair) and kept == len(eff) and len(fair) else
               "**not reproduced** as stated" + (" (only partially supported)" if n_sig else ""))
            + " by this sweep.", ""]
    return lines


def rules_section(comp: pd.DataFrame, baseline: float) -> list[str]:
    """Trained PPO at the baseline λ against the best rule, per scenario and metric."""
    sub = comp[comp["kind"] == "rule"] if not comp.empty else comp
    if sub.empty:
        return []
    lines = [f"## Trained PPO (λ={baseline:g}) against the rules", "",
             "Per scenario and metric, the rule with the best mean (the best rule differs by "
             "metric) against trained PPO at the baseline λ, on the same evaluation seeds. A "
             "deterministic rule gives the same value at every seed, so the test is in effect "
             "a one-sample t-test of PPO's seeds against the rule's value. Holm correction "
             "within each metric across scenarios × rules.", "",
             "| scenario | metric | PPO mean | best rule | rule mean | d | Holm p | PPO vs best rule |",
             "|---|---|---|---|---|---|---|---|"]
    beats: dict[str, list[int]] = {}
    for (scenario, key), g in sub.groupby(["scenario", "key"], sort=True):
        higher = g["direction"].iloc[0] == "higher"
        best = g.loc[g["baseline_mean"].idxmax() if higher else g["baseline_mean"].idxmin()]
        lines.append(f"| {scenario} | {best.metric} | {_fmt(best['mean'])} | "
                     f"{best.reference.removeprefix('rule:')} | {_fmt(best.baseline_mean)} | "
                     f"{_fmt(best.cohens_d, 2)} | {_p(best.p_holm)} | {best.verdict} |")
        tally = beats.setdefault(best.metric, [0, 0, 0])
        tally[0] += best.verdict == "significantly better"
        tally[1] += best.verdict == "significantly worse"
        tally[2] += 1
    lines.append("")
    for metric, (better, worse, n) in beats.items():
        lines.append(f"- {metric}: trained PPO is significantly better than the best rule in "
                     f"{better} of {n} scenarios, significantly worse in {worse}, and **not "
                     f"significantly different** in {n - better - worse}.")
    return lines + [""]


def convergence_section(conv: pd.DataFrame, tail: float) -> list[str]:
    if conv.empty:
        return []
    lines = ["## Convergence", "",
             f"Per scenario × trained arm: the drift of the return curve over the last "
             f"{tail:.0%} of iterations (least-squares slope × the window's length, per seed, "
             "then the mean over seeds) against the seed noise (the sd over seeds of the mean "
             "return in that window). **Flat** when |drift| <= seed noise. The curve is the "
             "greedy evaluation return (`eval_curve/return`, logged every `eval_every` "
             "iterations) where logged, else the training `return_mean`.", "",
             "| scenario | arm | curve | seeds | iterations (window) | drift | seed noise | flat |",
             "|---|---|---|---|---|---|---|---|"]
    for r in conv.itertuples(index=False):
        flat = "n/a" if r.flat is None or (isinstance(r.flat, float) and math.isnan(r.flat)) \
            else ("yes" if r.flat else "**no**")
        lines.append(f"| {r.scenario} | {r.arm} | {r.metric} | {r.seeds} | {r.last_iteration} "
                     f"({r.window_from}-{r.last_iteration}) | {_fmt(r.drift)} | "
                     f"{_fmt(r.seed_noise)} | {flat} |")
    n_flat = int((conv["flat"] == True).sum())  # noqa: E712  (column holds True/False/None)
    return lines + ["", f"{n_flat} of {len(conv)} arms are flat within seed noise.", ""]


def write_markdown(out: Path, meta: dict, summary: pd.DataFrame, comp: pd.DataFrame,
                   baseline: float, claim_lambda: float, plots: dict[str, str],
                   conv: pd.DataFrame | None = None, *, required_keys, alpha: float,
                   tail: float) -> Path:
    lines = [f"# Group-robust PPO sweep report: {meta['experiment']}", ""]
    if meta.get("partial"):
        lines += [f"> **PARTIAL REPORT**: {meta['partial']}", ""]
    lines += [f"- sweep parent run: `{meta['parent_run_id']}` ({meta.get('sweep_name', '')})",
              f"- trials: {meta['n_finished']} finished, {meta['n_other']} not finished "
              "(excluded)", f"- scenarios: {', '.join(meta['scenarios'])}",
              f"- λ values: {', '.join(f'{x:g}' for x in meta['lambdas'])}; baseline λ={baseline:g}",
              f"- arms: {', '.join(meta.get('arms', []))}",
              f"- seeds per cell: {meta['seeds_per_cell']}",
              *(f"- {k}: {v}" for k, v in meta.get("sweep_params", {}).items()), ""]
    lines += claim_section(comp, claim_lambda, baseline, required_keys)
    lines += rules_section(comp, baseline)
    lines += convergence_section(conv if conv is not None else pd.DataFrame(), tail)
    lines += ["## Per scenario × arm (mean ± std, 95% bootstrap CI over seeds)", "",
              "| scenario | arm | metric | n | mean ± std | 95% CI |", "|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        lines.append(f"| {r.scenario} | {r.arm} | {r.metric} | {r.n} | "
                     f"{_fmt(r.mean)} ± {_fmt(r.std)} | [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] |")
    lines += ["", f"## Comparisons: each arm against λ={baseline:g}, λ={baseline:g} against each rule",
              "",
              "Welch's t-test (two-sided) of the arm against the reference; p-values corrected "
              "with Bonferroni and Holm within each family (one metric and one kind of "
              "comparison, across all scenarios × arms); Cohen's d = (arm − reference)/pooled "
              "sd. Fairness metrics are scores in [0, 1] (1 = fair); fairness improvement % is "
              "the relative reduction of the unfairness 1 − score against the reference "
              "(positive = fairer); efficiency retention % is 100·(1 + Δreturn/|reference "
              "return|); per-capita improvement % is 100·Δ/|reference|. "
              f"Significance level {alpha} after Holm correction.", "",
              "| scenario | arm | vs | metric | mean (vs) | d | p | p Bonf. | p Holm | change % [95% CI] | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in comp.itertuples(index=False):
        lines.append(
            f"| {r.scenario} | {r.arm} | {r.reference} | {r.metric} | {_fmt(r.mean)} "
            f"({_fmt(r.baseline_mean)}) | {_fmt(r.cohens_d, 2)} | {_p(r.p)} | "
            f"{_p(r.p_bonferroni)} | {_p(r.p_holm)} | {r.change} {_fmt(r.change_pct, 1)} "
            f"[{_fmt(r.change_ci_low, 1)}, {_fmt(r.change_ci_high, 1)}] | {r.verdict} |")
    if not comp.empty:
        n_sig = int(comp["significant_holm"].sum())
        lines += ["", f"{n_sig} of {len(comp)} comparisons are significant after Holm correction; "
                  f"the remaining {len(comp) - n_sig} are **not significant** at {alpha}."]
    lines += ["", "## Plots", ""]
    lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in plots.items()]
    lines += ["## Files", "", "- `summary.csv`: the per scenario × arm table above (all "
              "metrics, including utilisation and per-group waits).",
              "- `comparisons.csv`: the tests above with t statistics, p-values and CIs.",
              "- `convergence.csv`: the convergence table; `pareto.csv`, `return_curves.csv`, "
              "`curves.csv`, `waits.csv`: data behind the Pareto, return-curve, training-curve "
              "and wait plots.", "",
              f"Regenerate: `python -m platform.report --experiment {meta['experiment']} "
              f"--baseline-lambda {baseline:g} --out DIR`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# --- convergence ---------------------------------------------------------------------------
