"""Every RLlib-version-sensitive call of the project, in one module (pinned: ray 2.60,
new API stack). After a Ray upgrade this is the file to re-check.

Two parts, both extending RLlib only at its documented seams:

* **Group-robust PPO** (the learner side): :class:`AddGroupIdsToBatch`, a learner
  ConnectorV2 that puts each timestep's group id in the batch;
  :class:`GroupRobustPPOTorchLearner`, a ``PPOTorchLearner`` whose
  ``compute_loss_for_module`` calls ``super()`` and adds the robust term of
  :mod:`algorithms.group_robust`; :class:`GroupRobustPPOConfig` / :class:`GroupRobustPPO`
  and :func:`register` (Tune name ``GroupRobustPPO``).
* **The adapter** the allocation loop calls: building a PPO config and an Algorithm outside
  Tune, env-runner callbacks, result-dict paths, checkpoints, greedy inference with an
  RLModule, and inspecting/restoring env runners.

Objective (math in :mod:`algorithms.group_robust`): ``L = (1-λ)·L_PPO + λ·L_robust``.
Group ids: the info returned by ``step`` for action ``a_t`` names the group of the patient
that decision concerned, so timestep t's group is ``infos[t + 1]`` (``infos[0]`` is the
reset info). PPO appends an artificial timestep per episode (its info duplicates the last
one); it is masked out of the loss.

``fairgrad=True`` (FairGrad, arXiv 2504.14388; :mod:`algorithms.fairgrad`): the gradient of
the loss above and one fairness objective per group (``0.5·(L_g - mean_g L_g)²`` of the
per-group clipped-surrogate losses) are taken separately, each is projected onto the normal
plane of any other it conflicts with, and their sum is applied (``compute_gradients``).
Local learner only: torch DDP's all-reduce hooks do not run for per-objective
``torch.autograd.grad`` calls.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

from algorithms.group_robust import ROBUST_MODES, clipped_surrogate, group_objectives, robust_term

ALGO_NAME = "GroupRobustPPO"
GROUP_COLUMN = "group_id"
DEFAULT_MODULE = "default_policy"
# How many recent episodes the per-episode env metrics are averaged over (like RLlib's
# own episode_return_mean).
EPISODE_WINDOW = 100

# Metric keys logged by the learner (under ``learners/<module_id>/``).
ROBUST_LOSS_KEY = "robust_loss"
GROUP_GAP_KEY = "group_gap"
PPO_LOSS_KEY = "ppo_total_loss"
FAIRGRAD_CONFLICTS_KEY = "fairgrad_conflicts"


# ----------------------------------------------------------------------- connector
class AddGroupIdsToBatch(ConnectorV2):
    """Learner connector: ``batch[GROUP_COLUMN]`` = ``info[group_key]`` per timestep.

    Runs right after PPO's ``AddOneTsToEpisodesAndTruncate`` so that the column has one
    item per (extended) timestep, like every other column; the group of timestep t is
    ``info[group_key]`` of the info returned by step t.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 group_key: str = "group", **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.group_key = group_key

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None,
                 **kwargs) -> Any:
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            n = len(episode)
            infos = episode.get_infos(slice(1, n + 1))  # info of step t = infos[t + 1]
            ids = [self._group_of(info, episode.id_, t) for t, info in enumerate(infos)]
            self.add_n_batch_items(batch, GROUP_COLUMN, ids, n, episode)
        return batch

    def _group_of(self, info: Any, episode_id: str, t: int) -> int:
        try:
            return int(info[self.group_key])
        except (KeyError, TypeError, ValueError):
            raise KeyError(
                f"group-robust PPO needs info[{self.group_key!r}] (an int) in the info of "
                f"every step; episode {episode_id} timestep {t} has info={info!r}"
            ) from None


# ------------------------------------------------------------------------- learner
class GroupRobustPPOTorchLearner(PPOTorchLearner):
    """PPOTorchLearner whose loss is ``(1-λ)·L_PPO + λ·L_robust`` (see module docstring)."""

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            connector = AddGroupIdsToBatch(group_key=self.config.group_info_key)
            if any(isinstance(c, AddOneTsToEpisodesAndTruncate)
                   for c in self._learner_connector.connectors):
                self._learner_connector.insert_after(AddOneTsToEpisodesAndTruncate, connector)
            else:
                self._learner_connector.prepend(connector)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        ppo_loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        module = self.module[module_id].unwrapped()
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        advantages = batch[Postprocessing.ADVANTAGES]
        surrogate = clipped_surrogate(
            dist.logp(batch[Columns.ACTIONS]), batch[Columns.ACTION_LOGP], advantages,
            config.clip_param,
        )
        mask = batch.get(Columns.LOSS_MASK)
        groups = batch[GROUP_COLUMN]
        ids, objectives, _ = group_objectives(surrogate, groups, mask)
        robust = robust_term(objectives, config.robust_mode)
        lam = float(config.robust_lambda)
        total = (1.0 - lam) * ppo_loss + lam * robust
        if config.fairgrad:
            from algorithms.fairgrad import fairgrad_losses_from_groups

            keep = mask if mask is not None else torch.ones_like(groups, dtype=torch.bool)
            self._fairgrad_objectives()[module_id] = fairgrad_losses_from_groups(
                -surrogate[keep], groups[keep])[1:]
        self._log_group_stats(module_id, batch, mask, groups, ids, objectives, robust, ppo_loss)
        return total

    def _fairgrad_objectives(self) -> dict:
        if not hasattr(self, "_fairgrad_pending"):
            self._fairgrad_pending: dict = {}
        return self._fairgrad_pending

    @override(PPOTorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        """PPO's gradients, or with ``fairgrad`` the projected sum of the objectives' ones."""
        pending = self._fairgrad_objectives()
        if not pending:
            return super().compute_gradients(loss_per_module, **kwargs)
        from algorithms.fairgrad import flat_grads, project_conflicting

        fairness = [f for objs in pending.values() for f in objs]
        pending.clear()
        for optim in self._optimizer_parameters:
            optim.zero_grad(set_to_none=True)
        params = [p for p in self._params.values() if p.requires_grad]
        losses = [sum(loss_per_module.values()), *fairness]
        grads = [flat_grads(loss, params, retain_graph=i < len(losses) - 1)
                 for i, loss in enumerate(losses)]
        if not hasattr(self, "_fairgrad_rng"):
            self._fairgrad_rng = np.random.default_rng(self.config.seed)
        conflicts = sum(float(torch.dot(grads[a], grads[b])) < 0
                        for a in range(len(grads)) for b in range(a + 1, len(grads)))
        total = torch.stack(project_conflicting(grads, self._fairgrad_rng)).sum(0)
        offset = 0
        for p in params:
            p.grad = total[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        for module_id in loss_per_module:
            self.metrics.log_value((module_id, FAIRGRAD_CONFLICTS_KEY), float(conflicts), window=1)
        return {pid: p.grad for pid, p in self._params.items() if p.grad is not None}

    def _log_group_stats(self, module_id, batch, mask, groups, ids, objectives, robust, ppo_loss):
        with torch.no_grad():
            stats = {ROBUST_LOSS_KEY: robust.detach(), PPO_LOSS_KEY: ppo_loss.detach()}
            gap = objectives.max() - objectives.min() if objectives.numel() else robust * 0.0
            stats[GROUP_GAP_KEY] = gap.detach()
            _, adv, _ = group_objectives(batch[Postprocessing.ADVANTAGES], groups, mask)
            _, vt, _ = group_objectives(batch[Postprocessing.VALUE_TARGETS], groups, mask)
            for i, g in enumerate(ids.tolist()):
                stats[f"group/{g}/objective"] = objectives[i].detach()
                stats[f"group/{g}/advantage"] = adv[i]
                stats[f"group/{g}/value_target"] = vt[i]
        self.metrics.log_dict(stats, key=module_id, window=1)


# -------------------------------------------------------------------------- config
class GroupRobustPPOConfig(PPOConfig):
    """PPOConfig plus ``robust_lambda``, ``robust_mode``, ``group_info_key`` and ``fairgrad``.

    ``group_info_key`` is the key of the env's step info holding the int group id
    (the hospital envs write ``info["group"]`` for whichever attribute or intersection
    their own ``group_key`` config selects).
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or GroupRobustPPO)
        self.robust_lambda = 0.3
        self.robust_mode = "gap"
        self.group_info_key = "group"
        self.fairgrad = False

    @override(PPOConfig)
    def training(self, *, robust_lambda=None, robust_mode=None, group_info_key=None,
                 fairgrad=None, **kwargs) -> GroupRobustPPOConfig:
        super().training(**kwargs)
        if robust_lambda is not None:
            self.robust_lambda = robust_lambda
        if robust_mode is not None:
            self.robust_mode = robust_mode
        if group_info_key is not None:
            self.group_info_key = group_info_key
        if fairgrad is not None:
            self.fairgrad = fairgrad
        return self

    @override(PPOConfig)
    def get_default_learner_class(self):
        return GroupRobustPPOTorchLearner

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        lam = self.robust_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"robust_lambda: got {lam!r}; allowed: a number in [0, 1]")
        if self.robust_mode not in ROBUST_MODES:
            raise ValueError(
                f"robust_mode: got {self.robust_mode!r}; allowed: {', '.join(ROBUST_MODES)}"
            )
        if not isinstance(self.group_info_key, str) or not self.group_info_key:
            raise ValueError(f"group_info_key: got {self.group_info_key!r}; allowed: a non-empty str")
        if not isinstance(self.fairgrad, bool):
            raise ValueError(f"fairgrad: got {self.fairgrad!r}; allowed: true or false")
        if self.fairgrad and self.num_learners > 1:
            raise ValueError(f"fairgrad: needs num_learners <= 1 (got {self.num_learners}); "
                             "per-objective gradients bypass DDP's all-reduce")


class GroupRobustPPO(PPO):
    """RLlib PPO with the group-robust learner (registered with Tune as ``GroupRobustPPO``)."""

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> GroupRobustPPOConfig:
        return GroupRobustPPOConfig()


def register() -> None:
    """Register ``GroupRobustPPO`` with Tune (idempotent)."""
    from ray.tune.registry import register_trainable

    register_trainable(ALGO_NAME, GroupRobustPPO)


# ------------------------------------------------------------------ episode metrics
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


# ---------------------------------------------------------------------------- results
def learner_results(result: dict, module_id: str = DEFAULT_MODULE) -> dict[str, Any]:
    return dict(result.get("learners", {}).get(module_id, {}) or {})


def env_runner_results(result: dict) -> dict[str, Any]:
    return dict(result.get("env_runners", {}) or {})


def iteration_of(result: dict) -> int:
    return int(result["training_iteration"])


def seconds_of(result: dict) -> float:
    return float(result.get("time_this_iter_s", float("nan")))


def env_steps_this_iter(result: dict) -> float:
    return float(env_runner_results(result).get("num_env_steps_sampled", float("nan")))


def env_steps_lifetime(result: dict) -> float:
    return float(result.get("num_env_steps_sampled_lifetime",
                            env_runner_results(result).get("num_env_steps_sampled_lifetime", 0.0)))


def num_env_runner_restarts(result: dict) -> int:
    return int(result.get("fault_tolerance", {}).get("num_remote_worker_restarts", 0) or 0)


# ------------------------------------------------------------------------------ build
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
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

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
        config.callbacks(EpisodeMetricsCallback)
    return config


def build_algo(algo_config, storage_path: str | Path, name: str = "allocation"):
    """``algo_config.build_algo()`` without touching ``~/ray_results``.

    An Algorithm built outside Tune creates a log dir under Ray's default storage path
    (``~/ray_results``); giving it a StorageContext puts that dir under Ray's session
    temp dir instead (results live in MLflow, checkpoints under ``storage_path``).
    """
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


def wait_for_env_runners(algo, timeout_s: float = 180.0, poll_s: float = 1.0) -> bool:
    """Block until every remote env runner is healthy again (True) or ``timeout_s`` passes.

    With ``restart_failed_env_runners`` Ray restarts a dead runner, but RLlib only takes
    it back into service when probed; until then ``train()`` returns iterations without
    samples. Call this after an iteration that sampled nothing.
    """
    group = algo.env_runner_group
    deadline = time.monotonic() + timeout_s
    while group.num_healthy_remote_workers() < group.num_remote_env_runners():
        if time.monotonic() > deadline:
            return False
        algo.restore_env_runners(group)
        time.sleep(poll_s)
    return True
