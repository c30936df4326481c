"""``python -m platform.clinical.compare``: FairGRPO vs GRPO, resampling and GroupDRO over seeds.

Every (algorithm, seed) runs through the same driver loop (:func:`platform.clinical.driver.train`)
on one set of actors: before each run the learners reload a step-0 DeepSpeed checkpoint (initial
weights + fresh optimizer, bit-exact) and the rollout workers get those weights, so runs differ
only in algorithm and seed (and actor start-up is paid once). Each run is an MLflow run.
Final held-out metrics (``data.eval_split``, default ``test`` here) are summarised per algorithm
as mean with a bootstrap 95% CI over seeds (:func:`platform.stats.summarize`), plus Welch tests
of FairGRPO against each baseline. Writes ``<out>/runs.csv``, ``summary.json`` and ``README.md``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADLINE = ("fairness/pooled/f1_gap", "fairness/pooled/pp_gap", "fairness/pooled/eod",
            "fairness/pooled/f1_std", "fairness/pooled/es_f1", "fairness/f1_gap", "fairness/pp_gap",
            "overall/f1", "overall/accuracy", "eval/accuracy", "reward/mean")
STAGES = ("rollout", "reward", "advantage", "update", "sync", "evaluate", "checkpoint")


# compare's own defaults, below --set (it evaluates once, after the last step, and keeps no
# checkpoints; its data is the synthetic set of --n-per-source rows, scored on the test split)
DEFAULT_SETS = ("eval_every=0", "checkpoint_every=0", "data.eval_split=test")


def _parser():
    from platform.cli import add_tracking_options, parser
    from platform.clinical.config import ClinicalConfig

    p = parser("python -m platform.clinical.compare", __doc__.split("\n")[0] + "\n\nDefaults "
               f"here (override with --set): {', '.join(DEFAULT_SETS)}, data.path = the "
               "synthetic set of --n-per-source rows per data source.", ClinicalConfig)
    p.add_argument("--algorithms", default="fairgrpo,grpo,grpo-resample,grpo-dro",
                   help="comma-separated platform.train clinical algorithms")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one run per algorithm x seed)")
    p.add_argument("--iterations", type=int, default=30, help="training steps per run (iterations)")
    p.add_argument("--n-per-source", type=int, default=400, help="synthetic rows per data source")
    p.add_argument("--out", default="docs/results/clinical", help="folder for runs.csv, summary.json, README.md")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys; repeatable)")
    g = p.add_argument_group("tracking")
    add_tracking_options(g, default_experiment="clinical-compare")
    return p


def configs(args, data_path: str) -> list:
    """One ClinicalConfig per (seed, algorithm): defaults < compare's defaults < --set <
    --iterations < the algorithm and seed of the run."""
    from platform.cli import config_from_args
    from platform.clinical.config import ClinicalConfig

    args.overrides = [*DEFAULT_SETS, f"data.path={data_path}", *args.overrides]
    algs = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return [config_from_args(ClinicalConfig, args, flags={"iterations": "iterations"},
                             fixed={"algorithm": a, "seed": s}) for s in seeds for a in algs]


def run_one(pipe, client, run_name: str, ckpt_root: str) -> dict[str, Any]:
    """Train one configured pipeline (actors already reset); returns its row of results."""
    from platform import tracking
    from platform.clinical.driver import train

    import mlflow

    from base.config import tracked_params

    t0 = time.perf_counter()
    tags = tracking.run_tags("clinical", pipe.cfg.algorithm, command="compare")
    with tracking.tracked_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(tracked_params(pipe.cfg))
        last = train(pipe, 0, run.info.run_id, ckpt_root)
    wall = time.perf_counter() - t0
    row = {"algorithm": pipe.cfg.algorithm, "seed": pipe.cfg.seed, "run_id": run.info.run_id,
           "wall_s": wall, **{k: last.get(k, float("nan")) for k in HEADLINE}}
    times = {s: _mean_history(client, run.info.run_id, f"time/{s}") for s in STAGES}
    step = _mean_history(client, run.info.run_id, "time/step")
    row.update({f"share/{s}": times[s] * _count(client, run.info.run_id, f"time/{s}")
                / (step * pipe.cfg.iterations) for s in STAGES})
    row["steps_per_s"] = 1.0 / step
    row["tokens_per_s"] = _mean_history(client, run.info.run_id, "throughput/tokens_per_s")
    return row


def _mean_history(client, run_id: str, key: str) -> float:
    h = client.get_metric_history(run_id, key)
    return sum(m.value for m in h) / len(h) if h else 0.0


def _count(client, run_id: str, key: str) -> int:
    return len(client.get_metric_history(run_id, key))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per algorithm and metric: n, mean, std, 95% bootstrap CI; Welch p-values vs fairgrpo."""
    from platform.stats import summarize, welch

    algs = list(dict.fromkeys(r["algorithm"] for r in rows))
    keys = list(HEADLINE) + [f"share/{s}" for s in STAGES] + ["steps_per_s", "tokens_per_s"]
    out: dict[str, Any] = {"algorithms": {}, "welch_vs_fairgrpo": {}}
    for a in algs:
        out["algorithms"][a] = {}
        for k in keys:
            s = summarize([r[k] for r in rows if r["algorithm"] == a])
            out["algorithms"][a][k] = {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low,
                                       "ci_high": s.ci_high}
    if "fairgrpo" in algs:
        fair = [r for r in rows if r["algorithm"] == "fairgrpo"]
        for a in algs:
            if a == "fairgrpo":
                continue
            other = [r for r in rows if r["algorithm"] == a]
            out["welch_vs_fairgrpo"][a] = {
                k: welch([r[k] for r in fair], [r[k] for r in other]).pvalue
                for k in ("fairness/pooled/f1_gap", "fairness/pooled/pp_gap", "overall/f1")}
    return out


def write_report(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "runs.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"meta": meta, **summary}, indent=2, default=float))
    lines = [
        "# Clinical GRPO comparison (synthetic data, tiny Gemma3 VLM, CPU)", "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}).", "",
        f"{meta['iterations']} steps x {meta['prompts_per_step']} prompts x G={meta['group_size']}, "
        f"seeds {meta['seeds']}, held-out split `{meta['eval_split']}` ({meta['eval_rows']} rows), "
        f"data `{meta['data']}`. Mean [95% bootstrap CI over seeds].", "",
        "Gaps are over the intersectional groups (sex x age band) pooled across data sources "
        "(`fairness/pooled/...`); the per-source-then-averaged values (the paper's definition) are in "
        "`runs.csv` as `fairness/f1_gap`, `fairness/pp_gap` (undefined when a source has < 2 groups "
        "of >= 5 held-out samples).", "",
        "| algorithm | Δ_F1 ↓ | PP gap ↓ | EOD ↓ | F1 ↑ | accuracy ↑ | train reward (last step) | steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a, m in summary["algorithms"].items():
        def f(k: str) -> str:
            v = m[k]
            return f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
        lines.append(f"| {a} | {f('fairness/pooled/f1_gap')} | {f('fairness/pooled/pp_gap')} | "
                     f"{f('fairness/pooled/eod')} | "
                     f"{f('overall/f1')} | {f('overall/accuracy')} | {f('reward/mean')} | "
                     f"{m['steps_per_s']['mean']:.3f} |")
    lines += ["", "Share of step time per stage (mean over runs of each algorithm):", "",
              "| algorithm | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for a, m in summary["algorithms"].items():
        lines.append(f"| {a} | " + " | ".join(f"{m[f'share/{s}']['mean']:.1%}" for s in STAGES) + " |")
    if summary["welch_vs_fairgrpo"]:
        lines += ["", "Welch t-test p-values, FairGRPO vs baseline (uncorrected):", "",
                  "| baseline | Δ_F1 | PP gap | F1 |", "|---|---|---|---|"]
        for a, p in summary["welch_vs_fairgrpo"].items():
            lines.append(f"| {a} | {p['fairness/pooled/f1_gap']:.3f} | {p['fairness/pooled/pp_gap']:.3f} | "
                         f"{p['overall/f1']:.3f} |")
    lines += ["", "Per-run values: `runs.csv`; everything above: `summary.json`.", ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv: list[str]) -> int:
    import datetime
    import platform as _platform
    from platform import tracking
    from platform.clinical.driver import Pipeline
    from platform.cluster import init_ray

    import mlflow

    from envs.clinical import dataset, synth

    args = _parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    data_path = str(synth.default_dataset_path(n_per_source=args.n_per_source))
    cfgs = configs(args, data_path)
    uri, _ = tracking.setup(args.tracking_uri, args.experiment)
    client = mlflow.MlflowClient(uri)
    init_ray(num_cpus=cfgs[0].num_cpus or None)
    first = Pipeline(cfgs[0])
    first.start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        first.learners.save(tmp, "init")
        w0 = first.learners.full_weights()
        try:
            for cfg in cfgs:
                pipe = Pipeline(cfg)
                pipe.attach(first.pool, first.learners)
                first.learners.load(tmp, "init")
                first.pool.load_weights(w0, version=0)
                rows.append(run_one(pipe, client, f"{cfg.algorithm}-seed{cfg.seed}", f"{tmp}/ck"))
                print(json.dumps({k: rows[-1][k] for k in ("algorithm", "seed", "fairness/pooled/f1_gap",
                                                           "fairness/pooled/pp_gap", "overall/f1", "wall_s")}),
                      flush=True)
        finally:
            first.stop()
    c = cfgs[0]
    meta = {"command": "python -m platform.clinical.compare " + " ".join(argv),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{_platform.machine()}, CPU", "iterations": c.iterations,
            "prompts_per_step": c.data.prompts_per_step, "group_size": c.rollout.group_size,
            "seeds": seeds, "eval_split": c.data.eval_split,
            "eval_rows": len(dataset.load_dataset(c.data.path, c.data.eval_split)),
            "data": f"synthetic, n_per_source={args.n_per_source}", "tracking_uri": uri}
    write_report(Path(args.out), rows, summarise(rows), meta)
    print(f"wrote {args.out}/README.md")
    return 0


if __name__ == "__main__":
    from platform.cli import run_main

    sys.exit(run_main(main))
