"""``python -m platform.train group-robust-ppo|ppo``: train, track, checkpoint, evaluate.

Stages: config (:func:`parse_args`) -> tracking (and, with ``--resume``, the run to
continue; none -> exit 2 before anything starts) -> Ray -> the allocation loop
(:func:`platform.allocation.loop.train`) with an :class:`MlflowSink` -> report.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from platform import cli
from platform.allocation.config import AllocationConfig
from typing import TYPE_CHECKING, Any

from base import config as config_lib
from base.errors import UsageError

if TYPE_CHECKING:  # the loop imports RLlib: keep ``--help`` and bad input fast
    from platform.allocation.loop import Step

TRACK = "allocation"
TAG_CHECKPOINT_ITER = "equirl.checkpoint_iteration"
# argparse dest -> AllocationConfig field
FLAGS = {**cli.COMMON_FLAGS, "scenario": "scenario", "robust_lambda": "robust_lambda",
         "robust_mode": "robust_mode", "group_key": "group_key",
         "num_env_runners": "num_env_runners", "run_name": "run_name"}


# ------------------------------------------------------------------------ the CLI
def parse_args(algorithm: str, argv: list[str]):
    """``argv`` -> ``(AllocationConfig, argparse.Namespace)``; bad input -> UsageError."""
    from platform.allocation import scenarios

    p = cli.parser(f"python -m platform.train {algorithm}",
                   "Train a hospital-allocation policy with RLlib; one MLflow run.\n"
                   "Precedence: defaults < --config < --set < flags.", AllocationConfig)
    cli.add_common_train_options(p)
    g = p.add_argument_group("allocation options")
    g.add_argument("--scenario", help=f"one of: {', '.join(scenarios.names())}")
    g.add_argument("--lambda", dest="robust_lambda", type=float, help="robust weight λ in [0, 1]")
    g.add_argument("--mode", dest="robust_mode", help="worst_group, ggf or gap (robust_mode)")
    g.add_argument("--group-key", dest="group_key", help="e.g. age_group or age_group+sex")
    g.add_argument("--num-env-runners", dest="num_env_runners", type=int)
    g.add_argument("--run-name", dest="run_name", help="MLflow run name (also what --resume finds)")
    args = p.parse_args(argv)
    return cli.config_from_args(AllocationConfig, args, FLAGS, fixed={"algorithm": algorithm}), args


def find_resumable(exp_id: str, run_name: str) -> tuple[str, str] | None:
    """Latest run named ``run_name`` with a checkpoint tag -> ``(run_id, checkpoint)``."""
    from platform.tracking import TAG_CHECKPOINT

    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [exp_id], filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        path = run.data.tags.get(TAG_CHECKPOINT)
        if path and Path(path).is_dir():
            return run.info.run_id, path
    return None


# ----------------------------------------------------------------------- the sink
class MlflowSink:
    """Results to the active MLflow run; checkpoints to ``root/iter_<n>`` (only the latest
    is kept), tagged on the run (``equirl.checkpoint``), which is what ``--resume`` finds.
    Each greedy evaluation also logs its per-group table (``eval/by_group/step-<N>.csv``), the
    final one ``eval/by_group.png`` and ``summary.md`` (:mod:`platform.allocation.artifacts`)."""

    def __init__(self, cfg: AllocationConfig, root: Path, run_id: str,
                 resume_from: str | None = None):
        self.cfg, self.root, self.run_id, self.resume_from = cfg, root, run_id, resume_from
        self.checkpoint_path: str | None = resume_from
        self.tables: list = []  # per-group tables of this process's evaluations (artifacts)

    def last_logged(self) -> int:
        from platform import tracking

        return tracking.last_logged_step(self.run_id, "training_iteration") or 0

    def restore(self, algo) -> None:
        from platform.allocation import rllib

        if self.resume_from:
            rllib.restore_checkpoint(algo, self.resume_from)

    def emit(self, step: Step, algo) -> None:
        from platform import tracking
        from platform.allocation.evaluate import summarize

        import mlflow

        from platform.allocation import artifacts

        if not step.replayed:  # after a hard kill an iteration may be logged already
            tracking.log_metrics(step.metrics, step=step.iteration)
            episodes = step.curve if step.curve is not None else step.evaluation
            if episodes is not None:  # eval/by_group/step-<N>.csv
                self.tables.append(artifacts.log_evaluation(episodes, step.iteration))
        if step.evaluation is not None:
            tracking.log_metrics(summarize(step.evaluation), step=step.iteration)
            mlflow.log_text(step.evaluation.to_csv(index=False), "eval/episodes.csv")
            cfg = self.cfg
            artifacts.log_summary(f"{cfg.algorithm} on {cfg.scenario}, λ {cfg.robust_lambda} "
                                  f"({cfg.robust_mode}), seed {cfg.seed}: iteration {step.iteration}",
                                  self.tables or [artifacts.group_table(step.evaluation,
                                                                        step.iteration)],
                                  step.evaluation)
        print(progress(step, self.cfg.iterations), flush=True)
        if step.checkpoint:
            self.checkpoint_path = self._save(algo, step.iteration)
        if step.final and self.checkpoint_path:  # the policy, servable without RLlib
            from platform.allocation.export import export_policy

            cfg = self.cfg
            out = export_policy(self.checkpoint_path, self.root / "policy", {
                "algorithm": cfg.algorithm, "run_id": self.run_id, "iteration": step.iteration,
                "scenario": cfg.scenario, "group_key": cfg.group_key, "seed": cfg.seed})
            mlflow.set_tag(tracking.TAG_MODEL_DIR, str(out))

    def _save(self, algo, iteration: int) -> str:
        from platform.allocation import rllib
        from platform.tracking import TAG_CHECKPOINT

        import mlflow

        path = rllib.save_checkpoint(algo, self.root / f"iter_{iteration:06d}")
        mlflow.set_tags({TAG_CHECKPOINT: path, TAG_CHECKPOINT_ITER: str(iteration)})
        for old in self.root.glob("iter_*"):
            if old.name != Path(path).name:
                shutil.rmtree(old, ignore_errors=True)
        return path


def progress(step: Step, total: int) -> str:
    """One line per iteration: return, group gap, the DP score (higher is fairer), steps/s."""
    m: dict[str, Any] = step.metrics

    def f(key: str, fmt: str) -> str:
        return format(m[key], fmt) if key in m else "-"

    return (f"iter {step.iteration:>4}/{total}  return {f('return_mean', '9.3f')}"
            f"  group_gap {f('group_gap', '8.4f')}"
            f"  fairness/dp_score {f('fairness/dp_score', '6.3f')}"
            f"  {f('env_steps_per_s', '7.0f')} steps/s")


def main(algorithm: str, argv: list[str]) -> int:
    cfg, args = parse_args(algorithm, argv)
    from platform import tracking
    from platform.allocation import loop
    from platform.cluster import checkpoint_root, init_ray, ray_run_info

    import mlflow

    uri, exp_id = tracking.setup(args.tracking_uri, args.experiment)
    experiment = args.experiment or tracking.DEFAULT_EXPERIMENT
    resume = find_resumable(exp_id, cfg.name) if args.resume else None
    if args.resume and resume is None:
        raise UsageError(f"--resume: no run named {cfg.name!r} with a checkpoint in experiment "
                         f"{experiment!r}; start it without --resume (or pass its --run-name)")
    if resume:
        from platform.allocation.rllib import missing_checkpoint_files

        missing = missing_checkpoint_files(resume[1])
        if missing:
            raise UsageError(f"--resume: checkpoint {resume[1]} of run {cfg.name!r} is "
                             f"incomplete: no {', '.join(missing)}")
    init_ray()
    root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else checkpoint_root(
        TRACK, experiment, cfg.name)
    with tracking.tracked_run(run_name=cfg.name, run_id=resume[0] if resume else None,
                              tags=tracking.run_tags(TRACK, cfg.algorithm, **ray_run_info())) as run:
        if not resume:
            mlflow.log_params(config_lib.tracked_params(cfg))
            tracking.log_config(cfg)
        sink = MlflowSink(cfg, root, run.info.run_id, resume[1] if resume else None)
        loop.train(cfg, sink)
        _report(uri, exp_id, run.info.run_id, sink.checkpoint_path)
    return 0


def _report(uri: str, exp_id: str, run_id: str, checkpoint: str | None) -> None:
    print(f"\nMLflow run {run_id} (experiment {exp_id}) in {uri}")
    print(f"checkpoint: {checkpoint}")
    print(f"open the UI: make ui   (or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1)")
    print(f"then browse /#/experiments/{exp_id}/runs/{run_id}")
