"""Fairness evaluation of any model's predictions from the command line.

    python -m platform.fairness --data preds.parquet --label y --pred y_hat \\
        --sensitive race,gender [--score p] [--json] [--ci]

Reads a parquet or CSV table, forms intersectional groups from the ``--sensitive`` columns
(``white&male``), and prints per-group metrics and between-group gaps. Binary and multiclass
labels are supported (binary: positive class = ``--pos-label`` or the larger label; multiclass:
one-vs-rest per class, averaged with equal class weight). Every number comes from the
``fairness`` package (``fairness.clinical`` report, ``fairness.scores`` differences,
``fairness.frame.MetricFrame`` per-group selection rate and AUROC, ``fairness.bootstrap``).

JSON keys (``--json``): ``demographic_parity_difference``, ``equalized_odds_difference``,
``equal_opportunity_difference`` (fairlearn's definitions; multiclass: mean over classes of the
one-vs-rest values), ``predictive_parity_difference`` (FDR gap), ``f1_std``, ``f1_gap``,
``equity_scaled_f1``, ``accuracy_std``, ``accuracy_gap``, ``equity_scaled_accuracy``, ``f1``,
``accuracy``, (with ``--score``: ``auroc``, ``auroc_gap``), ``by_group``, ``too_small``,
``n``, ``groups``, ``classes``, ``average``, and with ``--ci`` a ``ci`` mapping key -> [low,
high] (percentile bootstrap over rows). Groups with fewer than ``--min-group-size`` rows are
reported as ``{"too_small": true, "n": k}`` and left out of every gap (fairlearn numbers are
computed on the remaining rows; with no small group they are fairlearn's on the whole table);
the default, 1, keeps every group (the FairGRPO authors' evaluation). Group metrics follow
``fairness.clinical`` (the authors' definitions: classes without ground truth in a group are
skipped, ES = mean group value / (1 + std)). With several ``--sensitive`` columns the groups are
their intersection, and ``per_attribute`` holds the authors' view: the report keys computed for
each column on its own, then averaged.

Bad input (missing file or column, NaN labels/predictions, one group only) -> ``error: ...``
on stderr and exit code 2. Only aggregates are printed: no row-level data.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from platform.cli import parser as make_parser
from platform.cli import run_main
from typing import Any

import numpy as np

from base.errors import UsageError

KEYS = ("demographic_parity_difference", "equalized_odds_difference",
        "equal_opportunity_difference", "predictive_parity_difference", "f1_std", "f1_gap",
        "equity_scaled_f1", "accuracy_std", "accuracy_gap", "equity_scaled_accuracy", "f1",
        "accuracy")
_FROM_REPORT = {"predictive_parity_difference": "pp_gap", "f1_std": "f1_std",
                "f1_gap": "f1_gap", "equity_scaled_f1": "es_f1", "accuracy_std": "acc_std",
                "accuracy_gap": "acc_gap", "equity_scaled_accuracy": "es_acc"}


def build_parser():
    p = make_parser("python -m platform.fairness", __doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="FILE", help="table: .parquet or .csv")
    p.add_argument("--label", required=True, metavar="COL", help="true label column")
    p.add_argument("--pred", required=True, metavar="COL", help="predicted label column")
    p.add_argument("--sensitive", required=True, metavar="COL[,COL...]",
                   help="sensitive attribute column(s); several form intersectional groups")
    p.add_argument("--score", metavar="COL", help="predicted score of the positive class "
                   "(binary only): adds AUROC overall and by group")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ci", action="store_true", help="bootstrap 95%% confidence intervals")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--min-group-size", type=int, default=1,
                   help="smaller groups are reported as too small and left out of the gaps "
                        "(default 1: every group counts, as in the FairGRPO authors' evaluation)")
    p.add_argument("--labels", metavar="A,B,...", help="the class set (default: values seen)")
    p.add_argument("--pos-label", metavar="VALUE", help="positive class for binary metrics")
    p.add_argument("--average", choices=("auto", "macro", "binary"), default="auto",
                   help="auto: binary for two classes, macro (equal class weight) otherwise")
    return p


def load_table(path: str):
    """DataFrame from a .parquet or .csv file; errors name the file."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--data: no such file: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix == ".csv":
            return pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001 (any parser failure is a bad input file)
        raise UsageError(f"--data: cannot read {p}: {exc}") from None
    raise UsageError(f"--data: unsupported file type {suffix!r}; allowed: .parquet, .csv")


def _column(df, col: str, flag: str):
    """Column ``col`` of plain values (numbers, strings, booleans); errors name ``flag``."""
    if col not in df.columns:
        raise UsageError(f"{flag}: no column {col!r} in the data; columns: "
                         f"{', '.join(map(str, df.columns))}")
    if df[col].dtype == object:  # e.g. a parquet list or struct column
        bad = df[col].map(lambda v: isinstance(v, (list, tuple, dict, set, bytes, np.ndarray)))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise UsageError(f"{flag}: column {col!r} holds {type(df[col].iloc[i]).__name__} "
                             f"values (row {i}); expected numbers or strings")
    return df[col]


def _as_labels(y_true, y_pred):
    """Compare labels as given when both are numeric, else as strings."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(y_true) and pd.api.types.is_numeric_dtype(y_pred):
        return y_true.to_numpy(), y_pred.to_numpy()
    return y_true.astype(str).to_numpy(), y_pred.astype(str).to_numpy()


def _match_label(value: str, classes: list) -> Any:
    for c in classes:
        if str(c) == value or (isinstance(c, (int, float, np.number)) and _num(value) == c):
            return c
    raise UsageError(f"--pos-label: {value!r} is not a class; classes: {classes}")


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def evaluate(df, label: str, pred: str, sensitive: list[str], score: str | None = None,
             ci: bool = False, n_boot: int = 200, seed: int = 0, min_group_size: int = 1,
             labels: list | None = None, pos_label: str | None = None,
             average: str = "auto") -> dict[str, Any]:
    """All numbers the CLI prints, as a JSON-able dict (see the module docstring)."""
    import pandas as pd

    from fairness.clinical import GROUP_METRICS, clinical_fairness_report
    from fairness.frame import MetricFrame
    from fairness.groups import Groups, group_codes, resolve_average
    from fairness.scores import DIFFERENCES, fairlearn_differences

    if not sensitive:
        raise UsageError("--sensitive: give at least one column")
    y_true = _column(df, label, "--label")
    y_pred = _column(df, pred, "--pred")
    for flag, col, s in (("--label", label, y_true), ("--pred", pred, y_pred)):
        if s.isna().any():
            raise UsageError(f"{flag}: column {col!r} has {int(s.isna().sum())} missing values")
    sens = pd.DataFrame({c: _column(df, c, "--sensitive") for c in sensitive})
    for c in sensitive:
        if sens[c].isna().any():
            raise UsageError(f"--sensitive: column {c!r} has {int(sens[c].isna().sum())} "
                             "missing values (fill them, e.g. with 'missing')")
    codes, names = group_codes(sens, sensitive)
    if len(names) < 2:
        raise UsageError(f"--sensitive: {','.join(sensitive)} has only one group "
                         f"({names[0] if names else 'none'}); need at least two")
    yt, yp = _as_labels(y_true, y_pred)
    classes = sorted(set(yt.tolist()) | set(yp.tolist())) if labels is None else labels
    if labels is not None and pd.api.types.is_numeric_dtype(y_true):
        classes = [_num(x) if _num(x) is not None else x for x in labels]
    pos = None if pos_label is None else _match_label(pos_label, classes)
    mode, _ = resolve_average(average, list(classes), pos)
    if mode == "binary" and pos is None:
        pos = classes[-1]

    counts = np.bincount(codes, minlength=len(names))
    big = counts[codes] >= min_group_size
    attr = "&".join(sensitive)
    group_col = pd.DataFrame({attr: np.asarray(names, dtype=object)[codes]})
    report = clinical_fairness_report(yt, yp, group_col, labels=classes,
                                      min_group_size=min_group_size, ci=ci, n_boot=n_boot,
                                      seed=seed, average=mode, pos_label=pos)
    out: dict[str, Any] = {}
    if int((counts >= min_group_size).sum()) >= 2:
        out.update(fairlearn_differences(yt[big], yp[big], codes[big], labels=classes,
                                         average=mode, pos_label=pos))
    else:
        out.update(dict.fromkeys(DIFFERENCES, float("nan")))
    groups = Groups(codes, names)
    selection = (MetricFrame("selection_rate", groups, y_true=yt, y_pred=yp,
                             params={"labels": classes, "average": "binary", "pos_label": pos})
                 .group_values("selection_rate") if mode == "binary" else None)
    for key, rkey in _FROM_REPORT.items():
        out[key] = report[f"fairness/{rkey}"]
    out["f1"], out["accuracy"] = report["overall/f1"], report["overall/accuracy"]
    by_group: dict[str, dict[str, Any]] = {}
    for gi, g in enumerate(names):
        if counts[gi] < min_group_size:
            by_group[g] = {"too_small": True, "n": int(counts[gi])}
            continue
        pre = f"fairness/by_group/{attr}={g}"
        by_group[g] = {s: report[f"{pre}/{s}"] for s in GROUP_METRICS}
        by_group[g]["n"] = int(counts[gi])
        by_group[g]["selection_rate"] = (float(selection[gi]) if selection is not None
                                         else float("nan"))
    if score is not None:
        _add_auroc(out, by_group, _column(df, score, "--score"), yt, pos, mode, groups,
                   min_group_size)
    out.update({"by_group": by_group, "too_small": report["too_small"], "n": len(yt),
                "groups": len(names), "classes": [_clean(c) for c in classes],
                "average": mode, "sensitive": list(sensitive),
                "min_group_size": int(min_group_size)})
    if len(sensitive) > 1:  # the authors' view: each attribute on its own, then the mean
        each = clinical_fairness_report(yt, yp, sens.reset_index(drop=True), labels=classes,
                                        min_group_size=min_group_size, average=mode, pos_label=pos)
        out["per_attribute"] = {key: each[f"fairness/{rkey}"] for key, rkey in _FROM_REPORT.items()}
    if ci:
        out["ci"] = _cis(report, attr, yt, yp, codes, big, classes, mode, pos, n_boot, seed)
    return _clean(out)


def _add_auroc(out, by_group, score, yt, pos, mode, groups, min_group_size):
    """AUROC overall and per group (registered ``auroc``), ``auroc_gap`` = their difference."""
    from fairness.frame import MetricFrame

    if mode != "binary":
        raise UsageError("--score: AUROC needs binary labels (use --average binary)")
    if score.isna().any() or not np.issubdtype(score.to_numpy().dtype, np.number):
        raise UsageError("--score: expected a numeric column without missing values")
    frame = MetricFrame("auroc", groups, min_group_size=min_group_size,
                        y_true=(yt == pos).astype(int), y_score=score.to_numpy(dtype=float))
    out["auroc"] = frame.overall["auroc"]
    for gi, g in enumerate(groups.names):
        value = frame.values("auroc")[gi]
        if np.isfinite(value):  # reportable, with both classes
            by_group[g]["auroc"] = float(value)
    out["auroc_gap"] = frame.difference()["auroc"]


def _cis(report, attr, yt, yp, codes, big, classes, mode, pos, n_boot, seed) -> dict:
    """[low, high] for every headline key: report CIs + a bootstrap of the fairlearn keys."""
    ci = {}
    for key, rkey in {**_FROM_REPORT, "f1": None, "accuracy": None}.items():
        src = f"overall/{key}" if rkey is None else f"fairness/{rkey}"
        if f"{src}/ci_low" in report:
            ci[key] = [report[f"{src}/ci_low"], report[f"{src}/ci_high"]]
    ci.update(fairlearn_bootstrap(yt[big], yp[big], codes[big], classes, mode, pos, n_boot, seed))
    return ci


def fairlearn_bootstrap(yt, yp, codes, classes, mode, pos, n_boot, seed) -> dict[str, list]:
    """Percentile bootstrap (rows; seed + 1) of fairlearn's three differences."""
    from fairness.bootstrap import bootstrap_ci
    from fairness.groups import encode_labels
    from fairness.scores import differences_from_codes

    yt_c, yp_c, _ = encode_labels(yt, yp, classes)
    pos_c = None if pos is None else list(classes).index(pos)
    _, g = np.unique(codes, return_inverse=True)
    G, K = (int(g.max()) + 1 if g.size else 0), len(classes)
    cis = bootstrap_ci(lambda t, p, gg: differences_from_codes(t, p, gg, G, K, mode, pos_c),
                       yt_c, yp_c, g, n_resamples=n_boot, seed=seed + 1, vectorized=True)
    return {k: [low, high] for k, (low, high) in cis.items()}


def format_text(res: dict[str, Any]) -> str:
    """Human-readable table: one row per group, then the gaps."""
    cols = ["n", "accuracy", "f1", "tpr", "fpr", "fdr"] + (
        ["auroc"] if "auroc" in res else [])
    width = max([len("group")] + [len(g) for g in res["by_group"]])
    head = (f"{len(res['by_group'])} groups of {'&'.join(res['sensitive'])}, n={res['n']}, "
            f"classes={res['classes']} ({res['average']})")
    lines = [head, ""]
    lines.append("  ".join([f"{'group':<{width}}"] + [f"{c:>9}" for c in cols]))
    for g, row in res["by_group"].items():
        if row.get("too_small"):
            lines.append(f"{g:<{width}}  {row['n']:>9}  too small (< {res['min_group_size']})")
            continue
        cells = [f"{row['n']:>9}"] + [_fmt(row.get(c)) for c in cols[1:]]
        lines.append("  ".join([f"{g:<{width}}"] + cells))
    lines.append("")
    for k in (*KEYS, "auroc", "auroc_gap"):
        if k in res:
            extra = ""
            if "ci" in res and k in res["ci"]:
                lo, hi = res["ci"][k]
                extra = f"  [{_fmt(lo).strip()}, {_fmt(hi).strip()}]"
            lines.append(f"{k:<32}{_fmt(res[k]).strip()}{extra}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{'n/a':>9}" if v is None else f"{v:>9.4f}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.min_group_size < 1:
        raise UsageError(f"--min-group-size: must be >= 1, got {args.min_group_size}")
    if args.ci and args.n_boot < 10:
        raise UsageError(f"--n-boot: must be >= 10, got {args.n_boot}")
    if args.seed < 0:
        raise UsageError(f"--seed: must be >= 0, got {args.seed}")
    df = load_table(args.data)
    sensitive = [c.strip() for c in args.sensitive.split(",") if c.strip()]
    labels = None if args.labels is None else [x.strip() for x in args.labels.split(",")]
    res = evaluate(df, args.label, args.pred, sensitive, score=args.score, ci=args.ci,
                   n_boot=args.n_boot, seed=args.seed, min_group_size=args.min_group_size,
                   labels=labels, pos_label=args.pos_label, average=args.average)
    print(json.dumps(res, indent=2, sort_keys=False) if args.json else format_text(res))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
