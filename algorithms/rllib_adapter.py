"""The RLlib seams the platform uses, in one place (pinned: ray 2.60, new API stack).

Everything here touches an RLlib API whose name or signature has moved between
releases: env-runner callbacks, result-dict paths, checkpoints, greedy inference with an
RLModule, and killing/inspecting env runners. ``platform/allocation`` calls only these
functions and :mod:`algorithms.group_robust_ppo`; after a Ray upgrade this file and that
one are the ones to re-check.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns

DEFAULT_MODULE = "default_policy"
# How many recent episodes the per-episode env metrics are averaged over (like RLlib's
# own episode_return_mean).
EPISODE_WINDOW = 100


def per_group_returns(rewards: list[float] | np.ndarray, infos: list[dict], key: str = "group"
                      ) -> dict[int, float]:
    """Sum of rewards per group of one episode.

    Args:
        rewards: (T,) reward of step t.
        infos: (T+1,) infos aligned with observations (``infos[0]`` from reset);
            ``infos[t + 1][key]`` is the group the decision of step t concerned.
    Returns:
        group id -> summed reward (groups without a step are absent).
    """
    out: dict[int, float] = {}
    for t, r in enumerate(rewards):
        info = infos[t + 1] if t + 1 < len(infos) else {}
        if not isinstance(info, dict) or key not in info:
            continue
        g = int(info[key])
        out[g] = out.get(g, 0.0) + float(r)
    return out


class EpisodeMetricsCallback(RLlibCallback):
    """Env-runner callback: per-group returns and the env's ``episode_metrics``.

    Logs ``group/<id>/return`` and every finite scalar of the last step's
    ``info["episode_metrics"]`` (``fairness/...``, ``util/...``, ``group/<name>/...``,
    ``wait/...``) as means over the last :data:`EPISODE_WINDOW` episodes.
    """

    group_info_key = "group"

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        infos = list(episode.get_infos())
        rewards = episode.get_rewards()
        for g, ret in per_group_returns(rewards, infos, self.group_info_key).items():
            metrics_logger.log_value(f"group/{g}/return", ret, reduce="mean", window=EPISODE_WINDOW)
        last = infos[-1] if infos else {}
        metrics = last.get("episode_metrics", {}) if isinstance(last, dict) else {}
        for name, value in metrics.items():
            numeric = isinstance(value, (int, float, np.floating, np.integer)) \
                and not isinstance(value, bool)
            if numeric and math.isfinite(float(value)):
                metrics_logger.log_value(str(name), float(value), reduce="mean",
                                         window=EPISODE_WINDOW)


def attach_callbacks(algo_config) -> None:
    """Install :class:`EpisodeMetricsCallback` on an AlgorithmConfig."""
    algo_config.callbacks(EpisodeMetricsCallback)


# ---------------------------------------------------------------------------- results
def learner_results(result: dict, module_id: str = DEFAULT_MODULE) -> dict[str, Any]:
    return dict(result.get("learners", {}).get(module_id, {}) or {})


def env_runner_results(result: dict) -> dict[str, Any]:
    return dict(result.get("env_runners", {}) or {})


def iteration_of(result: dict) -> int:
    return int(result["training_iteration"])


def env_steps_this_iter(result: dict) -> float:
    return float(env_runner_results(result).get("num_env_steps_sampled", float("nan")))


def env_steps_lifetime(result: dict) -> float:
    return float(result.get("num_env_steps_sampled_lifetime",
                            env_runner_results(result).get("num_env_steps_sampled_lifetime", 0.0)))


def num_env_runner_restarts(result: dict) -> int:
    return int(result.get("fault_tolerance", {}).get("num_remote_worker_restarts", 0) or 0)


# ------------------------------------------------------------------------------ build
def build_algo(algo_config, storage_path: str | Path, name: str = "allocation"):
    """``algo_config.build_algo()`` without touching ``~/ray_results``.

    An Algorithm built outside Tune creates a log dir under Ray's default storage path
    (``~/ray_results``); giving it a StorageContext puts that dir under Ray's session
    temp dir instead (results live in MLflow, checkpoints under ``storage_path``).
    """
    import copy

    from ray.train._internal.storage import StorageContext

    Path(storage_path).mkdir(parents=True, exist_ok=True)
    storage = StorageContext(storage_path=str(storage_path), experiment_dir_name=name,
                             trial_dir_name="driver")
    return algo_config.algo_class(config=copy.deepcopy(algo_config), storage=storage)


# ------------------------------------------------------------------------- checkpoints
def save_checkpoint(algo, path: str | Path) -> str:
    """Save the whole algorithm (module, optimizer, env-runner states, iteration)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str(path))
    return str(path)


def restore_checkpoint(algo, path: str | Path) -> None:
    algo.restore_from_path(str(path))


def module_of(algo, module_id: str = DEFAULT_MODULE):
    return algo.get_module(module_id)


def module_weights(algo, module_id: str = DEFAULT_MODULE) -> dict[str, torch.Tensor]:
    """Copies of the learner's module weights (name -> tensor)."""
    learner = algo.learner_group._learner
    if learner is None:  # remote learners
        state = algo.learner_group.get_weights()
        return {k: torch.as_tensor(v).clone() for k, v in state[module_id].items()}
    return {k: v.detach().clone() for k, v in learner.module[module_id].state_dict().items()}


# --------------------------------------------------------------------------- inference
def greedy_action(module, obs: np.ndarray) -> Any:
    """Deterministic action of an RLModule for one observation (shape = obs space)."""
    with torch.no_grad():
        batch = {Columns.OBS: torch.as_tensor(np.asarray(obs)[None], dtype=torch.float32)}
        out = module.forward_inference(batch)
        dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        action = dist.to_deterministic().sample()[0]
    action = action.cpu().numpy()
    return action.item() if action.ndim == 0 else action


# ------------------------------------------------------------------------- env runners
def remote_env_runner_pids(algo) -> list[int]:
    """PIDs of the algorithm's remote env-runner actors (for fault-injection tests)."""
    return list(algo.env_runner_group.foreach_env_runner(
        lambda runner: os.getpid(), local_env_runner=False))


# ------------------------------------------------------------------------ configs
def build_ppo_config(
    *, robust: bool, env: str, env_config: dict, seed: int, num_env_runners: int,
    num_envs_per_env_runner: int, train_batch_size: int, minibatch_size: int, num_epochs: int,
    lr: float, gamma: float, gae_lambda: float, clip_param: float, entropy_coeff: float,
    hidden_sizes: list[int], robust_lambda: float = 0.0, robust_mode: str = "gap",
    group_info_key: str = "group", episode_callbacks: bool = True, fairgrad: bool = False,
):
    """A PPOConfig (or GroupRobustPPOConfig when ``robust``) on the new API stack.

    Env-runner restarts are on, every seed is explicit (``debugging(seed=...)`` seeds
    torch/numpy/random in the learner and ``seed + worker index`` in the env runners).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from algorithms.group_robust_ppo import GroupRobustPPOConfig, register

    if robust:
        register()
        config = GroupRobustPPOConfig().training(
            robust_lambda=float(robust_lambda), robust_mode=robust_mode,
            group_info_key=group_info_key, fairgrad=bool(fairgrad))
    else:
        config = PPOConfig()
    config = (
        config.environment(env, env_config=dict(env_config))
        .env_runners(num_env_runners=num_env_runners,
                     num_envs_per_env_runner=num_envs_per_env_runner,
                     rollout_fragment_length="auto")
        .training(train_batch_size_per_learner=train_batch_size, minibatch_size=minibatch_size,
                  num_epochs=num_epochs, lr=lr, gamma=gamma, lambda_=gae_lambda,
                  clip_param=clip_param, entropy_coeff=entropy_coeff)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(hidden_sizes),
                                                   vf_share_layers=False))
        .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=100,
                         delay_between_env_runner_restarts_s=1.0)
        .debugging(seed=seed, log_level="WARN")
    )
    if episode_callbacks:
        attach_callbacks(config)
    return config


def wait_for_env_runners(algo, timeout_s: float = 180.0, poll_s: float = 1.0) -> bool:
    """Block until every remote env runner is healthy again (True) or ``timeout_s`` passes.

    With ``restart_failed_env_runners`` Ray restarts a dead runner, but RLlib only takes
    it back into service when probed; until then ``train()`` returns iterations without
    samples. Call this after an iteration that sampled nothing.
    """
    import time

    group = algo.env_runner_group
    deadline = time.monotonic() + timeout_s
    while group.num_healthy_remote_workers() < group.num_remote_env_runners():
        if time.monotonic() > deadline:
            return False
        algo.restore_env_runners(group)
        time.sleep(poll_s)
    return True
