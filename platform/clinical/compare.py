"""``python -m platform.clinical.compare``: FairGRPO against its baselines over seeds, scored
the way the FairGRPO paper scores them; with ``--sft-iterations`` the clinical benchmark.

The benchmark (``--sft-iterations N``, e.g. ``--config configs/clinical/benchmark.yaml``):

1. data: the synthetic set (``envs.clinical.synth``) with weak-signal *hard* groups, and a
   supervised split of it that keeps only ``--sft-keep`` of the hard groups' training rows
   (``synth.benchmark_datasets``; same held-out rows);
2. ``sft`` (``platform.train sft``'s pipeline, seed ``--sft-seed``) on that split, exported
   as a Hugging Face model dir, evaluated on the held-out split: the start of every RL run;
3. every (algorithm, seed) from that start, on the full training split.

Every (algorithm, seed) runs through the same driver loop (:func:`platform.clinical.driver.train`)
on one set of actors: before each run the learners reload a step-0 DeepSpeed checkpoint
(the start weights + a fresh optimizer, bit-exact) and the rollout workers get those weights,
so runs differ only in algorithm and seed. Each run is an MLflow run. ``--resume`` keeps the
rows already in ``<out>/runs.csv`` (and the sft model) and runs only the missing ones.
Writes ``runs.csv``, ``history.csv``, ``summary.json``, ``curves.png`` and ``README.md``
(:mod:`.compare_report`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = ("rollout", "reward", "advantage", "update", "sync", "evaluate", "checkpoint")

# compare's own defaults, below --set (held-out evaluations on the test split, the start
# policy evaluated at step 0, no checkpoints kept; its data is the synthetic set of
# --n-per-source rows per data source)
DEFAULT_SETS = ("eval_every=0", "checkpoint_every=0", "data.eval_split=test", "eval_at_start=true")


def _parser():
    from platform.cli import add_tracking_options, parser
    from platform.clinical.config import ClinicalConfig

    p = parser("python -m platform.clinical.compare", __doc__.split("\n")[0] + "\n\nDefaults "
               f"here (override with --set): {', '.join(DEFAULT_SETS)}, data.path = the "
               "synthetic set of --n-per-source rows per data source.", ClinicalConfig)
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML: config fields (as --set) plus a `compare:` section with these "
                        "options (e.g. configs/clinical/benchmark.yaml)")
    p.add_argument("--algorithms", default=None,
                   help="comma-separated platform.train clinical algorithms "
                        "(default fairgrpo,grpo,grpo-resample,grpo-dro)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--iterations", type=int, default=None, help="RL steps per run (default 30)")
    p.add_argument("--n-per-source", type=int, default=None, help="synthetic rows per data source (400)")
    p.add_argument("--sft-iterations", type=int, default=None,
                   help="> 0: the benchmark: sft this many steps first, RL from its model (default 0)")
    p.add_argument("--sft-keep", type=float, default=None,
                   help="share of the hard groups' training rows the sft split keeps (0.1)")
    p.add_argument("--hard-groups", default=None,
                   help="comma-separated sex|age_band groups with a weak image signal "
                        "(default F|>75,M|>75,F|<=25,M|<=25 with --sft-iterations)")
    p.add_argument("--hard-strength", type=float, default=None,
                   help="their signal strength, 0..1 (default 0.3; 1 = as strong as the others)")
    p.add_argument("--sft-seed", type=int, default=None, help="seed of the sft run (0)")
    p.add_argument("--sft-set", dest="sft_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="config override for the sft run only (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default docs/results/clinical)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in <out>/runs.csv and the sft model; run the rest")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite README.md, summary.json and curves.png from "
                        "<out>/runs.csv, history.csv and the start recorded in summary.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of the RL runs (dotted keys; repeatable)")
    g = p.add_argument_group("tracking")
    add_tracking_options(g, default_experiment="clinical-compare")
    return p


OPTION_DEFAULTS = {"algorithms": "fairgrpo,grpo,grpo-resample,grpo-dro", "seeds": "0,1,2",
                   "iterations": 30, "n_per_source": 400, "sft_iterations": 0, "sft_keep": 0.1,
                   "hard_groups": "", "hard_strength": 0.3, "sft_seed": 0,
                   "out": "docs/results/clinical"}
BENCHMARK_HARD = "F|>75,M|>75,F|<=25,M|<=25"


def resolve_options(args) -> dict[str, Any]:
    """compare's own options: defaults < the YAML's ``compare:`` section < flags. The YAML's
    other keys become the RL runs' config (below --set); ``compare.sft_set``: the sft run's."""
    from base.config import load_yaml

    opts: dict[str, Any] = {**OPTION_DEFAULTS, "sft_file": {}}
    file_cfg: dict[str, Any] = {}
    if args.config:
        file_cfg = load_yaml(args.config)
        section = file_cfg.pop("compare", {}) or {}
        unknown = sorted(set(section) - set(OPTION_DEFAULTS) - {"sft_set"})
        if unknown:
            from base.errors import ConfigError

            raise ConfigError("compare", f"unknown option(s) {unknown} in {args.config}; allowed: "
                              f"{', '.join(sorted(OPTION_DEFAULTS))}, sft_set")
        opts["sft_file"] = section.pop("sft_set", {}) or {}
        opts.update(section)
    for k in OPTION_DEFAULTS:
        if getattr(args, k, None) is not None:
            opts[k] = getattr(args, k)
    for k, default in OPTION_DEFAULTS.items():  # e.g. `compare: {iterations: many}` in the YAML
        kind = type(default)
        try:
            opts[k] = kind(opts[k]) if kind in (int, float) else opts[k]
        except (TypeError, ValueError):
            from base.errors import UsageError

            what = "an integer" if kind is int else "a number"
            raise UsageError(f"--{k.replace('_', '-')}: {opts[k]!r} is not {what}") from None
    if opts["sft_iterations"] and not opts["hard_groups"]:
        opts["hard_groups"] = BENCHMARK_HARD
    opts["file_cfg"] = file_cfg
    return opts


def data_paths(opts: dict[str, Any]) -> tuple[str, str | None]:
    """``(rl, sft)`` dataset folders (``sft`` None without an sft stage)."""
    from envs.clinical import synth

    kw: dict[str, Any] = {"n_per_source": int(opts["n_per_source"])}
    if opts["hard_groups"]:
        kw.update(hard_groups=tuple(g.strip() for g in str(opts["hard_groups"]).split(",") if g.strip()),
                  hard_strength=float(opts["hard_strength"]))
    if not opts["sft_iterations"]:
        return str(synth.default_dataset_path(**kw)), None
    rl, sft = synth.benchmark_datasets(float(opts["sft_keep"]), **kw)
    return str(rl), str(sft)


def _build(args, opts: dict[str, Any], fixed: dict[str, Any], last: dict[str, Any] | None = None):
    """ClinicalConfig from: defaults < compare's defaults < the YAML's fields < --set <
    ``last`` < ``fixed`` (errors name the field, exit 2)."""
    from platform.clinical.config import ClinicalConfig

    from base.config import build, deep_merge, parse_overrides, set_path

    data = deep_merge(parse_overrides(list(DEFAULT_SETS)), opts["file_cfg"])
    data = deep_merge(deep_merge(data, parse_overrides(args.overrides)), last or {})
    for dotted, value in fixed.items():
        set_path(data, dotted, value)
    return build(ClinicalConfig, data)


def configs(args, opts: dict[str, Any], data_path: str, model_path: str | None) -> list:
    """One ClinicalConfig per (seed, algorithm), on ``data_path``, from ``model_path``."""
    from base.errors import UsageError

    algs = [a.strip() for a in str(opts["algorithms"]).split(",") if a.strip()]
    try:
        seeds = [int(s) for s in str(opts["seeds"]).split(",") if str(s).strip()]
    except ValueError:
        raise UsageError(f"--seeds: {opts['seeds']!r} is not a comma-separated list of "
                         "integers") from None
    if not algs or not seeds:
        raise UsageError(f"--algorithms / --seeds: need at least one of each, got "
                         f"{opts['algorithms']!r} / {opts['seeds']!r}")
    fixed = {"data.path": data_path, **({"model.path": model_path} if model_path else {})}
    return [_build(args, opts, {**fixed, "algorithm": a, "seed": s,
                                "iterations": int(opts["iterations"])})
            for s in seeds for a in algs]


def sft_config(args, opts: dict[str, Any], data_path: str):
    """The sft run: the RL runs' config < ``compare.sft_set`` < --sft-set; algorithm sft with
    its seed and iterations on the sft split, evaluated once, at its end."""
    from base.config import deep_merge, parse_overrides

    return _build(args, opts, {"algorithm": "sft", "seed": int(opts["sft_seed"]),
                               "iterations": int(opts["sft_iterations"]), "data.path": data_path,
                               "eval_at_start": False},
                  last=deep_merge(opts["sft_file"], parse_overrides(args.sft_overrides)))


def run_one(pipe, client, run_name: str, ckpt_root: str) -> tuple[dict[str, Any], list[dict], dict]:
    """Train one configured pipeline (actors already reset): its row of results, its held-out
    evaluations (history rows) and its last metrics."""
    from platform import tracking
    from platform.clinical.compare_report import HISTORY_KEYS, KEYS
    from platform.clinical.driver import train

    import mlflow

    from base.config import tracked_params

    t0 = time.perf_counter()
    tags = tracking.run_tags("clinical", pipe.cfg.algorithm, command="compare")
    with tracking.tracked_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(tracked_params(pipe.cfg))
        last = train(pipe, 0, run.info.run_id, ckpt_root)
    wall = time.perf_counter() - t0
    rid = run.info.run_id
    row = {"algorithm": pipe.cfg.algorithm, "seed": pipe.cfg.seed, "run_id": rid,
           "wall_s": wall, **{k: last.get(k, float("nan")) for k in KEYS}}
    times = {s: _mean_history(client, rid, f"time/{s}") for s in STAGES}
    step = _mean_history(client, rid, "time/step")
    row.update({f"share/{s}": times[s] * _count(client, rid, f"time/{s}")
                / (step * pipe.cfg.iterations) for s in STAGES})
    row["steps_per_s"] = 1.0 / step
    row["tokens_per_s"] = _mean_history(client, rid, "throughput/tokens_per_s")
    history = [{"algorithm": pipe.cfg.algorithm, "seed": pipe.cfg.seed, "step": m.step,
                "key": k, "value": m.value}
               for k in HISTORY_KEYS for m in client.get_metric_history(rid, k)]
    return row, history, last


def _mean_history(client, run_id: str, key: str) -> float:
    h = client.get_metric_history(run_id, key)
    return sum(m.value for m in h) / len(h) if h else 0.0


def _count(client, run_id: str, key: str) -> int:
    return len(client.get_metric_history(run_id, key))


def _write_csv(df, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def start_model(cfg, client, store: Path, tmp: str) -> tuple[str, dict[str, float]]:
    """The sft model dir (trained now, or the one ``store`` already holds for this exact
    config) and its held-out evaluation."""
    from platform.clinical.driver import Pipeline
    from platform.clinical.export import EXPORT_FILE, export_policy

    from base.config import tracked_params

    key = hashlib.sha256(json.dumps(tracked_params(cfg), sort_keys=True, default=str)
                         .encode()).hexdigest()[:12]
    model = store / f"sft-{key}"
    meta = model / EXPORT_FILE
    if meta.is_file() and (model / "start_eval.json").is_file():
        print(f"sft start: reusing {model}", flush=True)
        return str(model), json.loads((model / "start_eval.json").read_text())
    pipe = Pipeline(cfg)
    pipe.start()
    try:
        row, _, last = run_one(pipe, client, f"sft-seed{cfg.seed}", f"{tmp}/sft-ck")
        export_policy(pipe.learners, pipe.model_path, model,
                      {"algorithm": "sft", "step": cfg.iterations, "run_id": row["run_id"],
                       "seed": cfg.seed, "config_key": key})
    finally:
        pipe.stop()
    start = {k: float(v) for k, v in last.items() if k.startswith(("eval/", "fairness/", "overall/"))
             and "/by_group/" not in k or k.startswith("eval/by_group/")}
    (model / "start_eval.json").write_text(json.dumps(start, indent=1, sort_keys=True))
    return str(model), start


def _check_same_start(history: list[dict], start: dict[str, float]) -> None:
    """--resume (e.g. in a fresh checkout, where the sft model was trained again): the runs
    kept must have started from a policy that evaluates exactly like this one."""
    from base.errors import UsageError

    before = {float(h["value"]) for h in history if int(h["step"]) == 0 and h["key"] == "eval/accuracy"}
    if before and before != {start["eval/accuracy"]}:
        raise UsageError(f"--resume: the kept runs started from a policy with held-out accuracy "
                         f"{sorted(before)}, this sft start has {start['eval/accuracy']}; the "
                         "results would not be comparable (rerun without --resume)")


def report_only(out: Path) -> int:
    """Regenerate the report of ``out`` from its tables (no training, no MLflow)."""
    from platform.clinical.compare_report import write_report

    import pandas as pd

    from base.errors import UsageError

    need = [out / "runs.csv", out / "history.csv", out / "summary.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise UsageError(f"--report-only: missing {', '.join(missing)}")
    saved = json.loads((out / "summary.json").read_text())
    write_report(out, pd.read_csv(need[0]), pd.read_csv(need[1]), saved.get("start") or {},
                 saved["meta"])
    print(f"wrote {out}/README.md")
    return 0


def main(argv: list[str]) -> int:
    import datetime
    import platform as _platform
    from platform import tracking
    from platform.clinical.compare_report import write_report
    from platform.clinical.driver import Pipeline
    from platform.cluster import checkpoint_root, init_ray

    import mlflow
    import pandas as pd

    from base.errors import UsageError
    from envs.clinical import dataset

    t_start = time.perf_counter()
    args = _parser().parse_args(argv)
    opts = resolve_options(args)
    out = Path(opts["out"])
    if args.report_only:
        return report_only(out)
    configs(args, opts, "", None)  # bad fields and options fail before the data is made
    if opts["sft_iterations"]:
        sft_config(args, opts, "")
    rl_data, sft_data = data_paths(opts)
    runs_csv, hist_csv = out / "runs.csv", out / "history.csv"
    if args.resume and not runs_csv.is_file():
        raise UsageError(f"--resume: no {runs_csv} to resume")
    sft_cfg = sft_config(args, opts, sft_data) if sft_data else None
    cfgs = configs(args, opts, rl_data, None)  # validated before Ray starts; model set below
    uri, _ = tracking.setup(args.tracking_uri, args.experiment)
    client = mlflow.MlflowClient(uri)
    done = pd.read_csv(runs_csv) if args.resume else pd.DataFrame()
    hist = pd.read_csv(hist_csv) if args.resume and hist_csv.is_file() else pd.DataFrame()
    rows = done.to_dict("records")
    history = hist.to_dict("records")
    init_ray(num_cpus=cfgs[0].num_cpus or None)
    start: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = None
        if sft_cfg is not None:
            store = checkpoint_root("clinical", args.experiment or "clinical-compare", "sft-start")
            model_path, start = start_model(sft_cfg, client, Path(store), tmp)
            cfgs = configs(args, opts, rl_data, model_path)
            _check_same_start(history, start)
        todo = [c for c in cfgs if not any(r["algorithm"] == c.algorithm and int(r["seed"]) == c.seed
                                           for r in rows)]
        if todo:
            first = Pipeline(todo[0])
            first.start()
            first.learners.save(tmp, "init")
            w0 = first.learners.full_weights()
            try:
                for cfg in todo:
                    pipe = Pipeline(cfg)
                    pipe.attach(first.pool, first.learners)
                    first.learners.load(tmp, "init")
                    first.pool.load_weights(w0, version=0)
                    row, hrows, _ = run_one(pipe, client, f"{cfg.algorithm}-seed{cfg.seed}", f"{tmp}/ck")
                    rows.append(row)
                    history += hrows
                    _write_csv(pd.DataFrame(rows), runs_csv)  # after every run: --resume
                    _write_csv(pd.DataFrame(history), hist_csv)
                    print(json.dumps({k: row[k] for k in ("algorithm", "seed", "fairness/f1_gap",
                                                          "fairness/pp_gap", "eval/accuracy", "wall_s")}),
                          flush=True)
            finally:
                first.stop()
    c = cfgs[0]
    hard = [g for g in str(opts["hard_groups"]).split(",") if g]
    setup = (f"{c.iterations} RL steps x {c.data.prompts_per_step} prompts x G={c.rollout.group_size}, "
             f"lr {c.learner.lr}, {c.learner.num_learners} learner(s), {c.rollout.num_workers} rollout "
             f"worker(s); seeds {opts['seeds']}; held-out split `{c.data.eval_split}` "
             f"({len(dataset.load_dataset(c.data.path, c.data.eval_split))} rows); synthetic data, "
             f"{opts['n_per_source']} rows per source")
    if sft_cfg is not None:
        setup += (f", hard groups {', '.join(hard)} (signal strength {opts['hard_strength']}); "
                  f"sft: {sft_cfg.iterations} steps x {sft_cfg.data.prompts_per_step} answers, lr "
                  f"{sft_cfg.learner.lr}, on a split keeping {opts['sft_keep']:.0%} of the hard "
                  "groups' training rows")
    meta = {"title": "Clinical GRPO-family comparison (synthetic data, tiny Gemma3 VLM, CPU)",
            "command": "python -m platform.clinical.compare " + " ".join(argv),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{_platform.machine()}, CPU", "setup": setup + ".",
            "wall_min": (time.perf_counter() - t_start) / 60 + (float(done["wall_s"].sum()) / 60
                                                              if len(done) else 0.0),
            "hard_groups": hard, "tracking_uri": uri, "options": {k: v for k, v in opts.items()
                                                                  if k != "file_cfg"}}
    write_report(out, pd.DataFrame(rows), pd.DataFrame(history), start, meta)
    print(f"wrote {out}/README.md")
    return 0


if __name__ == "__main__":
    from platform.cli import run_main

    sys.exit(run_main(main))
