"""``python -m platform.train {fairgrpo,fairgrpo-nd,grpo,rloo,reinforce-pp,grpo-resample,grpo-dro}``.

With no options: the built-in tiny Gemma3 VLM on the built-in synthetic data, local Ray,
MLflow at ``sqlite:///<repo>/mlflow.db``. A cluster run (``ray job submit --working-dir . --
python -m platform.train fairgrpo --model /models/medgemma-4b --data /data/clinical
--set learner.num_gpus=1 --set rollout.num_gpus=0.5``) connects to the job's cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from platform.clinical.config import ALGORITHM_ESTIMATORS, ClinicalConfig
from typing import Any

from base.errors import UsageError


def _parser(algorithm: str):
    from platform.cli import add_common_train_options, parser

    p = parser(f"python -m platform.train {algorithm}",
               f"{algorithm} on the clinical VLM pipeline (estimator "
               f"{ALGORITHM_ESTIMATORS.get(algorithm, '?')}); see docs/clinical-grpo.md.\n"
               "Config fields (--set key=value): see platform/clinical/config.py.")
    add_common_train_options(p)
    p.add_argument("--model", default=None, metavar="PATH", help="local Hugging Face model dir (model.path)")
    p.add_argument("--data", default=None, metavar="PATH", help="Parquet file/folder (data.path)")
    p.add_argument("--run-name", default=None, help="MLflow run name (and checkpoint folder)")
    return p


def build_config(algorithm: str, args: Any) -> ClinicalConfig:
    """YAML (--config) <- --set overrides <- explicit flags, validated into ClinicalConfig."""
    from base.config import build, deep_merge, load_yaml, parse_overrides

    data = load_yaml(args.config) if args.config else {}
    data = deep_merge(data, parse_overrides(args.overrides))
    data["algorithm"] = algorithm
    for flag, key in ((args.seed, "seed"), (args.iterations, "iterations"), (args.run_name, "run_name")):
        if flag is not None:
            data[key] = flag
    for flag, section in ((args.model, "model"), (args.data, "data")):
        if flag is not None:
            data.setdefault(section, {})["path"] = flag
    return build(ClinicalConfig, data)


def main(algorithm: str, argv: list[str]) -> int:
    from platform import tracking
    from platform.cluster import REPO_ROOT, init_ray

    args = _parser(algorithm).parse_args(argv)
    cfg = build_config(algorithm, args)
    run_name = cfg.run_name or f"{algorithm}-seed{cfg.seed}"
    experiment = args.experiment or "clinical"
    ckpt_root = Path(cfg.checkpoint_dir or REPO_ROOT / "checkpoints" / "clinical" / experiment / run_name)
    resume_from = None
    if args.resume:
        from platform.clinical import checkpoint

        resume_from = checkpoint.latest(ckpt_root)
        if resume_from is None:
            raise UsageError(f"--resume: no checkpoint under {ckpt_root} (run {run_name!r}, "
                             f"experiment {experiment!r})")
    tracking.check_tracking_uri(args.tracking_uri or tracking.default_tracking_uri())

    from platform.clinical.driver import DEDUPE_KEY, Pipeline, train

    pipe = Pipeline(cfg)  # data/model/reward/estimator errors surface here, before Ray starts
    uri, _ = tracking.setup(args.tracking_uri, experiment)
    if resume_from is None and ckpt_root.exists():
        shutil.rmtree(ckpt_root)  # a fresh run under this name replaces its old resume points
    ckpt_root.mkdir(parents=True, exist_ok=True)
    init_ray(num_cpus=cfg.num_cpus or None)
    try:
        pipe.start()
        start_step, run_id = 0, None
        if resume_from is not None:
            from platform.clinical import checkpoint

            state = checkpoint.restore(resume_from, pipe.learners)
            pipe.load_state_dict(state)
            pipe.sync(state["step"])
            start_step, run_id = int(state["step"]), state["run_id"]
        with tracking.tracked_run(run_name=run_name, run_id=run_id,
                                  tags={"algorithm": algorithm, "pipeline": "clinical"}) as run:
            if run_id is None:
                import mlflow

                mlflow.log_params(cfg.tracked_params())
            logged = tracking.last_logged_step(run_id, DEDUPE_KEY) if run_id else None
            metrics = train(pipe, start_step, run.info.run_id, str(ckpt_root), logged_through=logged)
        print(f"{algorithm}: run {run.info.run_id} ({uri}); step {cfg.iterations}: "
              f"reward {metrics.get('reward/mean', float('nan')):.3f}, "
              f"eval accuracy {metrics.get('eval/accuracy', float('nan')):.3f}")
    finally:
        pipe.stop()
    return 0
