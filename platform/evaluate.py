"""``python -m platform.evaluate clinical``: score a saved policy on a clinical dataset.

    python -m platform.evaluate clinical --model DIR --data PATH [--split test] [--out DIR]
    python -m platform.evaluate allocation (--run ID | --checkpoint DIR | --policy RULE) ...

(``allocation``: a trained hospital policy or a rule on a scenario over N evaluation seeds,
with the same outputs; :mod:`platform.allocation.evaluate_cli`.)

What a person runs on their own hospital's data after training elsewhere. ``--model`` is any
local Hugging Face VLM dir (e.g. a run's export, ``equirl.model_dir``); ``--data`` a Parquet
file or folder in the ``envs.clinical`` schema. Greedy answers (``HFBackend``, in this process,
on CPU or the first GPU) are scored by the same function as a training run's evaluations
(:func:`platform.clinical.evaluation.score_answers`: the FairGRPO authors' metric definitions,
each attribute on its own, per data source, then averaged; bootstrap CIs of the headline keys;
the intersectional view). Outputs:

* an MLflow run (experiment ``evaluate``; params: model, data, split, rows, attributes,
  min group size, resamples; the metrics; tag ``equirl.command=evaluate``);
* ``<out>/report.json`` (every metric plus the run's settings) and ``<out>/report.md``
  (headline gaps with CIs, the per-group table; groups smaller than ``--min-group-size`` are
  marked, not scored; groups under ``--report-min-size`` rows, default 10, show their size but
  not their accuracy). Only aggregates: no row, image or answer leaves the process.

Bad input (a missing model dir or file, an empty split, an unknown attribute, a bad option)
-> ``error: ...`` and exit code 2 before any run or file is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from platform.cli import run_main
from typing import Any

from base.errors import UsageError


def _parser():
    from platform.cli import add_tracking_options, parser

    p = parser("python -m platform.evaluate clinical", __doc__.split("\n")[0])
    p.add_argument("--model", required=True, metavar="DIR", help="local Hugging Face model dir")
    p.add_argument("--data", required=True, metavar="PATH", help="Parquet file/folder (envs.clinical schema)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="rows to score")
    p.add_argument("--attributes", default="sex,age_band",
                   help="comma-separated sensitive attributes, each evaluated on its own")
    p.add_argument("--min-group-size", type=int, default=1,
                   help="smaller groups are marked too small and left out of the gaps (default 1)")
    p.add_argument("--report-min-size", type=int, default=10,
                   help="privacy: report.md withholds the accuracy of groups with fewer rows "
                        "(their size stays; default 10)")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="bootstrap resamples of the rows for the CIs (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per generate call")
    p.add_argument("--max-new-tokens", type=int, default=32, help="answer length cap")
    p.add_argument("--answer-only", default="auto", choices=("auto", "on", "off"),
                   help="decode only option letters (auto: on for the built-in tiny model and "
                        "models trained from it)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for report.json and report.md (default evaluations/<run name>)")
    p.add_argument("--run-name", default=None, help="MLflow run name (default eval-<model dir name>)")
    add_tracking_options(p, default_experiment="evaluate")
    return p


def _check(args) -> None:
    if args.min_group_size < 1:
        raise UsageError(f"--min-group-size: {args.min_group_size} must be >= 1")
    if args.report_min_size < 1:
        raise UsageError(f"--report-min-size: {args.report_min_size} must be >= 1")
    if args.seed < 0:
        raise UsageError(f"--seed: {args.seed} must be >= 0")
    if args.bootstrap != 0 and args.bootstrap < 10:
        raise UsageError(f"--bootstrap: {args.bootstrap} must be 0 (none) or >= 10")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise UsageError("--batch-size and --max-new-tokens must be >= 1")


def generate_answers(model: str, rows: list[dict[str, Any]], answer_letters: str, batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """One greedy answer per row with the HF backend in this process."""
    from platform.clinical.driver import row_image
    from platform.clinical.generation import GenerationRequest
    from platform.clinical.hf_backend import HFBackend

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = HFBackend(model, device=device, torch_threads=None, answer_letters=answer_letters)
    from envs.clinical.prompts import build_messages

    texts: list[str] = []
    for i in range(0, len(rows), batch_size):
        part = rows[i: i + batch_size]
        res = backend.generate(GenerationRequest([build_messages(r) for r in part],
                                                 [row_image(r) for r in part], n=1, temperature=0.0,
                                                 max_new_tokens=max_new_tokens, seed=0))
        texts += [t[0] for t in res.texts]
    return texts


def markdown(metrics: dict[str, float], meta: dict[str, Any]) -> str:
    """The one-page report: headline gaps with CIs, then exact-match accuracy per group."""
    from platform.clinical.artifacts import headline_table

    lines = [f"# Evaluation of `{meta['model_name']}` on `{meta['data_name']}` ({meta['split']})", "",
             f"{meta['rows']} rows; attributes {', '.join(meta['attributes'])} (each on its own, "
             "per data source, then averaged: the FairGRPO authors' definitions, "
             "docs/fairness-metrics.md); 95% bootstrap CIs over rows "
             f"({meta['bootstrap']} resamples).", "",
             f"Exact-match accuracy {metrics['eval/accuracy']:.3f}; unparseable answers "
             f"{metrics['eval/invalid_rate']:.1%}; most frequent option letter "
             f"{metrics['eval/top_answer_share']:.1%} of the valid answers.", "", *headline_table(metrics)]
    lines += ["", "Exact-match accuracy per group (groups below the minimum size are not scored; "
              f"the accuracy of groups under {meta['report_min_size']} rows is withheld for "
              "privacy):", "", "| group | n | accuracy |", "|---|---|---|"]
    for g, n in sorted(meta["group_sizes"].items()):
        acc = metrics.get(f"eval/by_group/{g}/accuracy")
        label = g.replace("|", "\\|")  # a table cell
        cell = ("too small" if n < meta["min_group_size"] or acc is None else
                "withheld" if n < meta["report_min_size"] else f"{acc:.3f}")
        lines.append(f"| {label} | {n} | {cell} |")
    return "\n".join(lines) + "\n"


def clinical(argv: list[str]) -> int:
    from platform import tracking
    from platform.clinical import models
    from platform.clinical.evaluation import score_answers

    from envs.clinical.dataset import group_keys, load_dataset

    args = _parser().parse_args(argv)
    _check(args)
    model = models.resolve_model_path(args.model)  # UsageError naming model.path
    df = load_dataset(args.data, args.split)
    attrs = [a.strip() for a in args.attributes.split(",") if a.strip()]
    if not attrs:
        raise UsageError("--attributes: give at least one, e.g. sex,age_band")
    try:
        groups = group_keys(df, attrs)
    except UsageError as exc:  # an unknown attribute: name the flag
        raise UsageError(f"--attributes: {exc}") from None
    tracking.check_tracking_uri(args.tracking_uri or tracking.default_tracking_uri())
    letters_on = models.is_builtin(model) if args.answer_only == "auto" else args.answer_only == "on"
    n_options = max(len(o) for o in df["options"])
    run_name = args.run_name or f"eval-{model.name}"
    out = Path(args.out or Path("evaluations") / run_name)
    rows = [df.iloc[i].to_dict() for i in range(len(df))]
    texts = generate_answers(str(model), rows, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_options] if letters_on
                             else "", args.batch_size, args.max_new_tokens)
    metrics = score_answers(rows, texts, attrs, args.min_group_size, args.bootstrap, args.seed)
    sizes = groups.value_counts().to_dict()
    meta = {"model": str(model), "model_name": model.name, "data": str(args.data),
            "data_name": Path(args.data).name, "split": args.split, "rows": len(rows),
            "attributes": attrs, "min_group_size": args.min_group_size,
            "report_min_size": args.report_min_size, "bootstrap": args.bootstrap,
            "answer_only": letters_on, "group_sizes": {str(k): int(v) for k, v in sizes.items()}}
    uri, _ = tracking.setup(args.tracking_uri, args.experiment)
    import mlflow

    tags = tracking.run_tags("clinical", "evaluate", command="evaluate")
    with tracking.tracked_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({k: v for k, v in meta.items() if k not in ("group_sizes", "model_name",
                                                                      "data_name")})
        tracking.log_metrics(metrics, step=0)
        out.mkdir(parents=True, exist_ok=True)
        report = {"meta": meta, "run_id": run.info.run_id, "metrics": metrics}
        for name, text in (("report.json", json.dumps(report, indent=1, sort_keys=True, default=float)),
                           ("report.md", markdown(metrics, meta))):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(out / name)
        mlflow.log_artifact(str(out / "report.md"))
    print(f"evaluate: run {run.info.run_id} ({uri}); accuracy {metrics['eval/accuracy']:.3f}, "
          f"ΔF1 {metrics.get('fairness/f1_gap', float('nan')):.3f}; report {out / 'report.md'}")
    return 0


def allocation(argv: list[str]) -> int:
    from platform.allocation.evaluate_cli import main as allocation_main

    return allocation_main(argv)


TRACKS = {"clinical": clinical, "allocation": allocation}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m platform.evaluate clinical --model DIR --data PATH [options]\n"
              "       python -m platform.evaluate allocation (--run ID | --checkpoint DIR | "
              "--policy RULE) [options]\n\n" + "\n\n".join(__doc__.split("\n\n")[2:4]))
        return 0 if argv else 2
    if argv[0] not in TRACKS:
        raise UsageError(f"unknown track {argv[0]!r}; known: {', '.join(TRACKS)}")
    return TRACKS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(run_main(main))
