"""The sweep report's figures (:mod:`platform.report`): one function per PNG.

Each reads a table the report has already built (Pareto points, training and return curves,
episode waits) and writes one figure with matplotlib's Agg backend; nothing here reads
MLflow or computes a statistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MODE_MARKERS = {"worst_group": "o", "ggf": "^", "gap": "v"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _order(arms: list[str] | None, frame: pd.DataFrame) -> list[str]:
    """The arms present in ``frame``, in the order given (default sorted)."""
    present = set(frame["arm"])
    return [a for a in (arms or sorted(present)) if a in present]


def _arm_bands(ax, frame: pd.DataFrame, arms: list[str], cmap) -> None:
    """One line per arm over ``iteration`` (mean of ``value`` over seeds) with a ± sd band."""
    for k, arm in enumerate(arms):
        agg = frame[frame["arm"] == arm].groupby("iteration")["value"].agg(["mean", "std"])
        if agg.empty:
            continue
        color = cmap(k / max(1, len(arms) - 1))
        ax.plot(agg.index, agg["mean"], color=color, label=arm, marker=".")
        ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                        agg["mean"] + agg["std"].fillna(0), color=color, alpha=0.15)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _err(low: pd.Series, mid: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric CI error bars, shape (2, k); a NaN CI (n < 2) draws none."""
    return np.nan_to_num(np.vstack([(mid - low).to_numpy(), (high - mid).to_numpy()])).clip(min=0)


def plot_pareto(points: pd.DataFrame, path: Path, fair_specs, rule_kind: str) -> Path:
    """Fairness (each of ``fair_specs``: ``.key``, ``.label``, ``.direction``) vs efficiency
    (return) per scenario, from the report's Pareto points: one point per arm (trained: grey,
    marker by mode; ``kind == rule_kind``: black squares) with CI bars, the non-dominated
    points (rules included) joined as the front."""
    plt = _plt()
    fair = list(fair_specs)
    scenarios = sorted(points["scenario"].unique()) or ["(none)"]
    fig, axes = plt.subplots(len(scenarios), len(fair), squeeze=False,
                             figsize=(3.8 * len(fair), 3.2 * len(scenarios)))
    for i, sc in enumerate(scenarios):
        for j, spec in enumerate(fair):
            ax = axes[i][j]
            panel = points[(points.scenario == sc) & (points.key == spec.key)]
            marker = np.where(panel["kind"] == rule_kind, "s",
                              [MODE_MARKERS.get(m, "D") for m in panel["mode"]])
            for m in sorted(set(marker)):  # one errorbar call per marker (drawing is slow)
                pts = panel[marker == m]
                rule = m == "s"
                ax.errorbar(pts["return_mean"], pts["fairness"],
                            xerr=_err(pts["return_ci_low"], pts["return_mean"], pts["return_ci_high"]),
                            yerr=_err(pts["fairness_ci_low"], pts["fairness"], pts["fairness_ci_high"]),
                            fmt=m, color="black" if rule else "0.55", ecolor="0.8",
                            zorder=3 if rule else 1, markersize=5)
            for r in panel.itertuples(index=False):
                ax.annotate(r.arm.removeprefix("rule:"), (r.return_mean, r.fairness),
                            fontsize=6, xytext=(3, 3), textcoords="offset points",
                            weight="bold" if r.kind == rule_kind else "normal")
            front = panel[panel["on_front"]].sort_values("return_mean")
            ax.plot(front["return_mean"], front["fairness"], "-", color="C3", zorder=2,
                    label="Pareto front")
            ax.set_title(f"{sc}: {spec.label} ({spec.direction} is fairer)", fontsize=8)
            ax.set_xlabel("evaluation return (efficiency)", fontsize=8)
            ax.set_ylabel(spec.label, fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].plot([], [], "s", color="black", label="rule")
    axes[0][0].plot([], [], "o", color="0.55", label="trained arm")
    axes[0][0].legend(fontsize=6)
    return _save(fig, plt, path)


def plot_training_curves(curves: pd.DataFrame, path: Path, arms: list[str] | None = None) -> Path:
    """Rows: scenarios; columns: groups; one line per trained arm (mean over seeds, ± std);
    ``arms``: their order (default sorted)."""
    plt = _plt()
    scenarios = sorted(curves["scenario"].unique()) or ["(none)"]
    groups = sorted(curves["group"].unique()) or ["(none)"]
    fig, axes = plt.subplots(len(scenarios), len(groups), squeeze=False,
                             figsize=(3.4 * len(groups), 2.8 * len(scenarios)))
    lams = _order(arms, curves)
    cmap = plt.get_cmap("viridis")
    for i, sc in enumerate(scenarios):
        for j, grp in enumerate(groups):
            ax = axes[i][j]
            sub = curves[(curves.scenario == sc) & (curves.group == grp)]
            _arm_bands(ax, sub, lams, cmap)
            ax.set_title(f"{sc}: group {grp}", fontsize=8)
            ax.set_xlabel("training iteration", fontsize=8)
            metric = ", ".join(sorted(sub["metric"].unique())) or "return"
            ax.set_ylabel(f"group {metric}", fontsize=8)
            ax.tick_params(labelsize=7)
    if lams:
        axes[0][-1].legend(fontsize=6)
    return _save(fig, plt, path)


def plot_waits(waits: pd.DataFrame, path: Path, arms: list[str] | None = None) -> Path:
    """Box plots of per-episode mean wait, one panel per scenario, boxes grouped by group ×
    arm (``arms``: their order; default sorted)."""
    plt = _plt()
    scenarios = sorted(waits["scenario"].unique()) or ["(none)"]
    lams = _order(arms, waits)
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
            data = [sub[(sub.group == g) & (sub["arm"] == lam)]["wait"].to_numpy() for g in groups]
            pos = [gi + (k - (len(lams) - 1) / 2) * width for gi in range(len(groups))]
            bp = ax.boxplot([d if len(d) else [np.nan] for d in data], positions=pos,
                            widths=width * 0.9, patch_artist=True, showfliers=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(cmap(k / max(1, len(lams) - 1)))
            ax.plot([], [], "s", color=cmap(k / max(1, len(lams) - 1)), label=lam)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_title(f"{sc}: mean wait per evaluation episode, by group", fontsize=9)
        ax.set_ylabel("mean wait", fontsize=8)
        ax.legend(fontsize=6, ncol=min(6, len(lams)))
    return _save(fig, plt, path)


def plot_return_curves(curves: pd.DataFrame, conv: pd.DataFrame, path: Path,
                       arms: list[str] | None = None, tail: float = 0.2) -> Path:
    """One panel per scenario: each trained arm's return curve (mean ± sd over seeds), the
    convergence window (the last ``tail`` of iterations, from ``conv``) shaded."""
    plt = _plt()
    scenarios = sorted(curves["scenario"].unique()) or ["(none)"]
    order = _order(arms, curves)
    fig, axes = plt.subplots(1, len(scenarios), squeeze=False, figsize=(4.2 * len(scenarios), 3.2))
    cmap = plt.get_cmap("viridis")
    for i, sc in enumerate(scenarios):
        ax = axes[0][i]
        sub = curves[curves.scenario == sc]
        _arm_bands(ax, sub, order, cmap)
        c = conv[conv.scenario == sc]
        if len(c):
            ax.axvspan(c["window_from"].min() - 0.5, c["last_iteration"].max() + 0.5,
                       color="0.9", zorder=0, label=f"last {tail:.0%}")
        metric = ", ".join(sorted(sub["metric"].unique())) or "return"
        ax.set_title(f"{sc}: {metric}", fontsize=8)
        ax.set_xlabel("training iteration", fontsize=8)
        ax.set_ylabel("return", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return _save(fig, plt, path)


def plot_step_curves(history: pd.DataFrame, panels: list[tuple[str, str]], path: Path,
                     arms: list[str] | None = None, xlabel: str = "training step") -> Path:
    """One panel per ``(key, label)`` of ``panels``; in each, one line per arm over
    ``iteration`` (mean of ``value`` over seeds, ± std). ``history``: columns arm, seed,
    iteration, key, value (e.g. a clinical comparison's held-out evaluations)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.2 * len(panels), 3.2))
    names = _order(arms, history)
    cmap = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes[0], panels):
        _arm_bands(ax, history[history["key"] == key], names, cmap)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    if names:
        axes[0][-1].legend(fontsize=7)
    return _save(fig, plt, path)


def group_panels_png(tables: pd.DataFrame, panels: list[tuple[str, str]], xlabel: str) -> bytes:
    """PNG bytes of one panel per (column, title) of per-group tables stacked over steps
    (columns ``step``, ``group``, ...): each group's value over the steps (the run artifacts
    ``eval/by_group.png`` of both tracks)."""
    import io

    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(9, 3.2))
    for ax, (col, title) in zip(np.atleast_1d(axes), panels):
        if col not in tables:
            continue
        for group, sub in tables.groupby("group"):
            ax.plot(sub["step"], sub[col], marker=".", label=str(group))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not fractions
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
