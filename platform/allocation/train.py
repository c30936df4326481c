"""``python -m platform.train group-robust-ppo|ppo``: train, track, checkpoint, evaluate.

The driver loop reads as named stages: config -> tracking -> Ray -> algorithm
(-> resume) -> per iteration {train, metrics, log, checkpoint} -> evaluate -> report.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from platform import cli
from platform.allocation.config import AllocationConfig
from typing import Any

from base import config as config_lib

# result key in the learner -> metric name
_LEARNER_KEYS = {
    "robust_loss": "robust_loss", "group_gap": "group_gap", "ppo_total_loss": "loss/ppo",
    "total_loss": "loss/total", "policy_loss": "loss/policy", "vf_loss": "loss/vf",
    "entropy": "loss/entropy", "mean_kl_loss": "loss/kl",
    "fairgrad_conflicts": "fairgrad/conflicts",
}
_ENV_PREFIXES = ("fairness/", "util/", "group/", "wait/", "patients/")
TAG_CHECKPOINT = "equirl.checkpoint"
TAG_CHECKPOINT_ITER = "equirl.checkpoint_iteration"


# ------------------------------------------------------------------ the contract
def build_algo_config(cfg: AllocationConfig):
    """RLlib ``AlgorithmConfig`` for ``cfg``: GroupRobustPPO or PPO, restarts on, seeded."""
    from platform.allocation import scenarios

    from algorithms import rllib_adapter

    env_name = scenarios.register_with_tune(cfg.scenario)
    return rllib_adapter.build_ppo_config(
        robust=cfg.algorithm == "group-robust-ppo", env=env_name,
        env_config=cfg.env_creator_config(), seed=cfg.seed,
        num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=cfg.num_envs_per_env_runner,
        train_batch_size=cfg.train_batch_size, minibatch_size=cfg.minibatch_size,
        num_epochs=cfg.num_epochs, lr=cfg.lr, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        clip_param=cfg.clip_param, entropy_coeff=cfg.entropy_coeff,
        hidden_sizes=cfg.hidden_sizes, robust_lambda=cfg.robust_lambda,
        robust_mode=cfg.robust_mode, fairgrad=cfg.fairgrad,
    )


def build_algo(cfg: AllocationConfig):
    """Build the RLlib Algorithm of ``cfg`` (log dir under the storage root, never ~)."""
    from platform.cluster import storage_root

    from algorithms import rllib_adapter

    return rllib_adapter.build_algo(build_algo_config(cfg), storage_root(), "allocation")


def _scalar(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rename_group(key: str, group_names: list[str] | None) -> str:
    parts = key.split("/")
    if group_names and len(parts) >= 3 and parts[0] == "group" and parts[1].isdigit():
        i = int(parts[1])
        if i < len(group_names):
            parts[1] = str(group_names[i])
    return "/".join(parts)


def iteration_metrics(result: dict, group_names: list[str] | None = None) -> dict[str, float]:
    """Flat, namespaced metrics of one ``algo.train()`` result.

    Keys: ``training_iteration``, ``return_mean``, ``episode_len_mean``, ``env_steps_per_s``,
    ``env_steps_total``, ``time/iteration_s``, ``robust_loss``, ``group_gap``, ``loss/...``,
    ``group/<g>/objective|advantage|value_target|return``, and the env's episode metrics
    (``fairness/dp|eo|wte|individual``, ``util/...``, ``group/<name>/...``, ``wait/...``).
    Group ids become names when ``group_names`` is given. Non-finite values are dropped.
    """
    from algorithms import rllib_adapter as ra

    out: dict[str, float] = {"training_iteration": float(ra.iteration_of(result))}
    learner, runners = ra.learner_results(result), ra.env_runner_results(result)
    for key, value in learner.items():
        name = _LEARNER_KEYS.get(key) or (key if key.startswith("group/") else None)
        if name and (v := _scalar(value)) is not None:
            out[_rename_group(name, group_names)] = v
    for key, value in runners.items():
        if key.startswith(_ENV_PREFIXES) and (v := _scalar(value)) is not None:
            out[_rename_group(key, group_names)] = v
    for src, dst in (("episode_return_mean", "return_mean"), ("episode_len_mean", "episode_len_mean")):
        if (v := _scalar(runners.get(src))) is not None:
            out[dst] = v
    seconds = _scalar(result.get("time_this_iter_s"))
    steps = _scalar(ra.env_steps_this_iter(result))
    if seconds and steps is not None:
        out["env_steps_per_s"] = steps / seconds
        out["time/iteration_s"] = seconds
    out["env_steps_total"] = ra.env_steps_lifetime(result)
    out["fault_tolerance/env_runner_restarts"] = float(ra.num_env_runner_restarts(result))
    return out


def mlflow_params(cfg: AllocationConfig) -> dict[str, Any]:
    """The params a person compares across runs (not every flattened RLlib key)."""
    robust = cfg.algorithm == "group-robust-ppo"
    return {
        "algorithm": cfg.algorithm, "scenario": cfg.scenario, "group_key": cfg.group_key,
        "robust_lambda": cfg.robust_lambda if robust else 0.0,
        "robust_mode": cfg.robust_mode if robust else "none", "seed": cfg.seed,
        "fairgrad": cfg.fairgrad,
        "iterations": cfg.iterations, "train_batch_size": cfg.train_batch_size,
        "minibatch_size": cfg.minibatch_size, "num_epochs": cfg.num_epochs, "lr": cfg.lr,
        "gamma": cfg.gamma, "num_env_runners": cfg.num_env_runners,
        "hidden_sizes": ",".join(map(str, cfg.hidden_sizes)),
    }


# ------------------------------------------------------------------------ the CLI
def parse_args(algorithm: str, argv: list[str]):
    """``argv`` -> ``(AllocationConfig, argparse.Namespace)``; bad input -> UsageError."""
    p = cli.parser(f"python -m platform.train {algorithm}",
                   "Train a hospital-allocation policy with RLlib; one MLflow run.\n"
                   "Precedence: defaults < --config < --set < flags. Fields:\n" + _field_help())
    cli.add_common_train_options(p)
    g = p.add_argument_group("allocation options")
    g.add_argument("--scenario", help="urban, rural, pediatric, surge (or a gym id)")
    g.add_argument("--lambda", dest="robust_lambda", type=float, help="robust weight λ in [0, 1]")
    g.add_argument("--mode", dest="robust_mode", help="gap or worst_group")
    g.add_argument("--group-key", dest="group_key", help="e.g. age_group or age_group+sex")
    g.add_argument("--num-env-runners", dest="num_env_runners", type=int)
    g.add_argument("--run-name", dest="run_name", help="MLflow run name (also what --resume finds)")
    args = p.parse_args(argv)
    data: dict[str, Any] = config_lib.load_yaml(args.config) if args.config else {}
    data = config_lib.deep_merge(data, config_lib.parse_overrides(args.overrides))
    for name in ("seed", "iterations", "scenario", "robust_lambda", "robust_mode", "group_key",
                 "num_env_runners", "run_name"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    data["algorithm"] = algorithm
    return config_lib.build(AllocationConfig, data), args


def _field_help() -> str:
    return config_lib.help_text(AllocationConfig)


def _find_resumable(exp_id: str, run_name: str) -> tuple[str, str] | None:
    """Latest run named ``run_name`` with a checkpoint tag -> ``(run_id, checkpoint)``."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [exp_id], filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        path = run.data.tags.get(TAG_CHECKPOINT)
        if path and Path(path).is_dir():
            return run.info.run_id, path
    return None


def _checkpoint(algo, cfg: AllocationConfig, iteration: int) -> str:
    from platform.cluster import storage_root

    import mlflow

    from algorithms import rllib_adapter

    root = Path(cfg.checkpoint_dir or storage_root() / "allocation" / cfg.name)
    path = rllib_adapter.save_checkpoint(algo, root / f"iter_{iteration:06d}")
    mlflow.set_tags({TAG_CHECKPOINT: path, TAG_CHECKPOINT_ITER: str(iteration)})
    for old in root.glob("iter_*"):
        if old.name != Path(path).name:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _progress(m: dict[str, float], total: int) -> str:
    def f(key: str, fmt: str) -> str:
        return format(m[key], fmt) if key in m else "-"

    return (f"iter {int(m['training_iteration']):>4}/{total}  return {f('return_mean', '9.3f')}"
            f"  group_gap {f('group_gap', '8.4f')}  fairness/dp {f('fairness/dp', '6.3f')}"
            f"  {f('env_steps_per_s', '7.0f')} steps/s")


def main(algorithm: str, argv: list[str]) -> int:
    cfg, args = parse_args(algorithm, argv)
    from platform import tracking

    uri, exp_id = tracking.setup(args.tracking_uri, args.experiment)
    from platform.cluster import init_ray

    init_ray()
    from platform.allocation import evaluate as evaluation
    from platform.allocation import scenarios

    import mlflow

    from algorithms import rllib_adapter

    with scenarios.make(cfg.scenario, cfg.env_creator_config()) as probe:
        group_names = evaluation.group_names_of(probe)
    resume = _find_resumable(exp_id, cfg.name) if args.resume else None
    if args.resume and resume is None:
        print(f"--resume: no checkpointed run named {cfg.name!r}; starting fresh", file=sys.stderr)
    algo = build_algo(cfg)
    try:
        if resume:
            rllib_adapter.restore_checkpoint(algo, resume[1])
        with tracking.tracked_run(run_name=cfg.name, run_id=resume[0] if resume else None,
                                  tags={"equirl.algorithm": cfg.algorithm}) as run:
            if not resume:
                mlflow.log_params(mlflow_params(cfg))
            last = tracking.last_logged_step(run.info.run_id, "training_iteration") or 0
            iteration = algo.iteration
            while iteration < cfg.iterations:
                result = algo.train()
                metrics = iteration_metrics(result, group_names)
                iteration = int(metrics["training_iteration"])
                if cfg.num_env_runners and not rllib_adapter.env_steps_this_iter(result) > 0:
                    print(f"iteration {iteration}: no samples (an env runner is restarting); "
                          "waiting for it", file=sys.stderr, flush=True)
                    rllib_adapter.wait_for_env_runners(algo)
                if iteration > last:  # after a hard kill an iteration may be logged already
                    tracking.log_metrics(metrics, step=iteration)
                print(_progress(metrics, cfg.iterations), flush=True)
                if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0:
                    _checkpoint(algo, cfg, iteration)
            path = _checkpoint(algo, cfg, iteration)
            if cfg.eval_episodes:
                df = evaluation.evaluate(algo, cfg, cfg.eval_episodes, cfg.eval_seeds())
                tracking.log_metrics(evaluation.summarize(df), step=iteration)
                mlflow.log_text(df.to_csv(index=False), "eval/episodes.csv")
            _report(uri, exp_id, run.info.run_id, path)
    finally:
        algo.stop()
    return 0


def _report(uri: str, exp_id: str, run_id: str, checkpoint: str) -> None:
    print(f"\nMLflow run {run_id} (experiment {exp_id}) in {uri}")
    print(f"checkpoint: {checkpoint}")
    print(f"open the UI: make ui   (or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1)")
    print(f"then browse /#/experiments/{exp_id}/runs/{run_id}")
