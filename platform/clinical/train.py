"""``python -m platform.train {fairgrpo,fairgrpo-nd,grpo,...,grpo-dro,sft}`` (the clinical track).

With no options: the built-in tiny Gemma3 VLM on the built-in synthetic data, local Ray,
MLflow at ``sqlite:///<repo>/mlflow.db``, checkpoints under
``platform.cluster.checkpoint_root("clinical", <experiment>, <run name>)``. A cluster run
(``ray job submit --working-dir . -- python -m platform.train fairgrpo --model /models/medgemma-4b
--data /data/clinical --set learner.num_gpus=1 --set rollout.num_gpus=0.5``) connects to the
job's cluster. ``--resume`` continues the run of that name from its last checkpoint (exit 2
when there is none). The final policy is exported as a Hugging Face model dir
(``export_dir``, default ``<checkpoint root>/model``; tag ``equirl.model_dir``): ``sft``'s is
the ``--model`` of the RL runs that follow it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from platform.clinical.config import ALGORITHMS, ClinicalConfig
from typing import Any

from base.errors import UsageError

EXPERIMENT = "clinical"  # default MLflow experiment (and checkpoint folder) of the track
FLAGS = {"seed": "seed", "iterations": "iterations", "run_name": "run_name", "model": "model.path",
         "data": "data.path"}  # argparse dest -> config field


def _parser(algorithm: str):
    from platform.cli import add_common_train_options, parser

    alg = ALGORITHMS.get(algorithm)
    p = parser(f"python -m platform.train {algorithm}",
               f"{alg.help if alg else algorithm} (advantage estimator "
               f"{alg.estimator if alg else '?'}, sampler {alg.sampler if alg else '?'}); "
               "see docs/clinical-grpo.md.", ClinicalConfig)
    add_common_train_options(p)
    p.add_argument("--model", default=None, metavar="PATH", help="local Hugging Face model dir (model.path)")
    p.add_argument("--data", default=None, metavar="PATH", help="Parquet file/folder (data.path)")
    p.add_argument("--run-name", default=None, help="MLflow run name and checkpoint folder (run_name)")
    return p


def build_config(algorithm: str, args: Any) -> ClinicalConfig:
    """defaults < --config < --set < flags (--seed --iterations --run-name --model --data) <
    the algorithm of the command; validated into ClinicalConfig (errors name the field)."""
    from platform.cli import config_from_args

    return config_from_args(ClinicalConfig, args, flags=FLAGS, fixed={"algorithm": algorithm})


def _plain_folder_name(name: str, flag: str) -> None:
    """UsageError unless ``name`` stays a folder under the storage root (a fresh run clears
    its checkpoint folder: an absolute path or '..' would clear one elsewhere)."""
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise UsageError(f"{flag}: {name!r} names the run's checkpoint folder under the storage "
                         "root; use a plain name (not absolute, no '..') or set checkpoint_dir")


def main(algorithm: str, argv: list[str]) -> int:
    from platform import tracking
    from platform.clinical import checkpoint
    from platform.clinical.export import check_out, default_export_dir
    from platform.cluster import checkpoint_root, init_ray, ray_run_info

    args = _parser(algorithm).parse_args(argv)
    cfg = build_config(algorithm, args)
    run_name = cfg.run_name or f"{algorithm}-seed{cfg.seed}"
    experiment = args.experiment or EXPERIMENT
    if not cfg.checkpoint_dir:  # the names become folders under the storage root
        _plain_folder_name(run_name, "--run-name")
        _plain_folder_name(experiment, "--experiment")
    ckpt_root = Path(cfg.checkpoint_dir or checkpoint_root("clinical", experiment, run_name))
    resume_from = None
    if args.resume:
        resume_from = checkpoint.latest(ckpt_root)
        if resume_from is None:
            raise UsageError(f"--resume: no checkpoint under {ckpt_root} (run {run_name!r}, "
                             f"experiment {experiment!r})")
        checkpoint.require_complete(resume_from, "--resume")
        checkpoint.load_driver_state(resume_from)  # a corrupt driver.pt: before Ray starts
    else:
        checkpoint.check_replaceable(ckpt_root, "checkpoint_dir" if cfg.checkpoint_dir
                                     else "--run-name")
    check_out(cfg.export_dir or default_export_dir(ckpt_root), "export_dir")
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
            state = checkpoint.restore(resume_from, pipe.learners)
            pipe.load_state_dict(state)
            pipe.sync(state["step"])
            start_step, run_id = int(state["step"]), state["run_id"]
        tags = {**tracking.run_tags("clinical", algorithm, **ray_run_info()),
                tracking.TAG_CHECKPOINT: str(ckpt_root)}  # step folders + the `latest` marker
        from platform.clinical.export import export_policy

        import mlflow

        with tracking.tracked_run(run_name=run_name, run_id=run_id, tags=tags) as run:
            if run_id is None:
                from base.config import tracked_params

                mlflow.log_params(tracked_params(cfg))
                tracking.log_config(cfg)
            logged = tracking.last_logged_step(run_id, DEDUPE_KEY) if run_id else None
            metrics = train(pipe, start_step, run.info.run_id, str(ckpt_root), logged_through=logged)
            model_dir = export_policy(pipe.learners, pipe.model_path,
                                      cfg.export_dir or default_export_dir(ckpt_root),
                                      {"algorithm": algorithm, "step": cfg.iterations,
                                       "run_id": run.info.run_id, "seed": cfg.seed})
            mlflow.set_tag(tracking.TAG_MODEL_DIR, str(model_dir))
        print(f"{algorithm}: run {run.info.run_id} ({uri}); step {cfg.iterations}: "
              + ("" if cfg.supervised else f"reward {metrics.get('reward/mean', float('nan')):.3f}, ")
              + f"eval accuracy {metrics.get('eval/accuracy', float('nan')):.3f}; "
              f"policy: {model_dir}")
    finally:
        pipe.stop()
    return 0
