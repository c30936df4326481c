"""Every RLlib-version-sensitive call of the project, in one module (pinned: ray 2.60,
new API stack). After a Ray upgrade this is the file to re-check.

Two parts, both extending RLlib only at its documented seams:

* **Group-robust PPO** (vector-reward PPO, the learner side): :class:`GroupValuePPOModule`
  (PPO's module plus one value head per group), :class:`GroupStreams` (a learner ConnectorV2
  after PPO's GAE: per-group GAE on the env's ``info["reward_by_group"]`` streams, the robust
  weights, A_mix), :class:`GroupRobustPPOTorchLearner` (``compute_loss_for_module`` calls
  ``super()`` and adds the group heads' regression), :class:`GroupRobustPPOConfig` /
  :class:`GroupRobustPPO` and :func:`register` (Tune name ``GroupRobustPPO``).
* **The adapter** the allocation loop calls: building a PPO config and an Algorithm outside
  Tune, env-runner callbacks, result-dict paths, checkpoints, greedy inference with an
  RLModule, and inspecting/restoring env runners.

Objective (math in :mod:`algorithms.group_robust`): PPO's clipped loss on
A_mix = (1 - λ)·A + λ·standardize(Σ_g w_g A_g), where A_g is group g's GAE advantage on its
own reward stream at *every* timestep and w the ``robust_mode``'s weights (``worst_group``:
online GroupDRO; ``ggf``: generalized Gini welfare; ``gap``: worst minus best) from the
per-capita objectives Ĵ_g. λ = 0 or one group leaves PPO's A untouched, so the policy and
PPO's critic train bit for bit as RLlib PPO. Step info convention: the info returned by
``step`` for action ``a_t`` names the group the decision concerned (``info["group"]``) and
carries the (G,) reward vector of step t (``info["reward_by_group"]``), so timestep t reads
``infos[t + 1]`` (``infos[0]`` is the reset info). PPO appends an artificial timestep per
episode (its info duplicates the last one); it is masked out of the loss.

``fairgrad=True`` (FairGrad, arXiv 2504.14388; :mod:`algorithms.fairgrad`): the gradient of
the loss above and one fairness objective per group (``0.5·(L_g - mean_g L_g)²`` of the
per-group clipped policy losses, each on the group's own stream advantages) are taken
separately, each is projected onto the normal plane of any other it conflicts with, and
their sum is applied (``compute_gradients``). Local learner only: torch DDP's all-reduce
hooks do not run for per-objective ``torch.autograd.grad`` calls.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from pathlib import Path
from platform.allocation.episodes import per_group_returns
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

from algorithms.group_robust import (
    ROBUST_OBJECTIVES,
    RobustState,
    clipped_surrogate,
    get_objective,
    mix_advantages,
    per_capita_objectives,
    robust_advantages,
    standardize,
)

ALGO_NAME = "GroupRobustPPO"
# Batch columns added by GroupStreams (one row per timestep, like every other column).
GROUP_COLUMN = "group_id"
GROUP_VALUE_TARGETS = "group_value_targets"  # (N, G)
GROUP_ADVANTAGES = "group_advantages"  # (N, G), each group's standardized

DEFAULT_MODULE = "default_policy"
# gymnasium.VectorizeMode value: the env's registered batched VectorEnv
VECTOR_ENTRY_POINT = "vector_entry_point"
# How many recent episodes the per-episode env metrics are averaged over (like RLlib's
# own episode_return_mean).
EPISODE_WINDOW = 100

# Metric keys logged by the learner (under ``learners/<module_id>/``), besides PPO's own and
# ``robust/weight/<g>``, ``group/<g>/value_per_capita`` (Ĵ_g), ``group/<g>/share``.
GROUP_VF_LOSS_KEY = "group_vf_loss"
FAIRGRAD_CONFLICTS_KEY = "fairgrad_conflicts"


# --------------------------------------------------------------------------- module
class GroupValuePPOModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module plus one value head per group (``model_config["n_groups"]``).

    The group value net is a separate MLP on the observation, so its regression never
    changes a gradient of PPO's own actor or critic (λ = 0 stays PPO bit for bit), and it is
    built under a forked torch RNG, so PPO's initial weights and exploration draws are the
    ones plain PPO gets. The GroupDRO weights q live in the buffer ``robust_q`` so that they
    are checkpointed and restored with the module.
    """

    @override(DefaultPPOTorchRLModule)
    def setup(self) -> None:
        super().setup()
        n = int(self.model_config.get("n_groups", 1))
        hidden = list(self.model_config.get("fcnet_hiddens", [64, 64]))
        dims = [int(np.prod(self.observation_space.shape)), *hidden]
        with torch.random.fork_rng(devices=[]):
            layers: list[torch.nn.Module] = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
            self.group_vf = torch.nn.Sequential(*layers, torch.nn.Linear(dims[-1], n))
        self.register_buffer("robust_q", torch.full((n,), 1.0 / n, dtype=torch.float64))

    def compute_group_values(self, batch: dict) -> torch.Tensor:
        """V_g(s_t) for every group: (B, G)."""
        obs = batch[Columns.OBS]
        return self.group_vf(obs.reshape(obs.shape[0], -1).float())

    @override(DefaultPPOTorchRLModule)
    def get_non_inference_attributes(self) -> list[str]:
        return [*super().get_non_inference_attributes(), "group_vf"]


# ----------------------------------------------------------------------- connector
def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


class GroupStreams(ConnectorV2):
    """Learner connector, after PPO's GAE: the per-group outcome streams into the batch.

    Per episode it reads ``info[group_key]`` (the group the decision of step t concerned)
    and ``info[reward_key]`` (the (G,) reward vector of step t) from ``infos[t + 1]``; PPO's
    artificial last timestep gets a zero vector. Then, on the whole batch:

    1. V_g of every timestep from the module's group heads, GAE on each stream
       (RLlib's ``compute_value_targets``, the same episode/bootstrap handling as PPO's) ->
       ``GROUP_VALUE_TARGETS`` (N, G) and ``GROUP_ADVANTAGES`` (N, G, each standardized);
    2. Ĵ_g per capita and the robust weights w (:mod:`algorithms.group_robust`; GroupDRO's q
       in the module's ``robust_q``);
    3. with λ > 0 and more than one group, PPO's standardized advantages are replaced by
       A_mix = (1 - λ)·A + λ·standardize(Σ_g w_g A_g). λ = 0 or one group: untouched.

    ``stats`` keeps the last call's ``weights``, ``j`` and ``share`` (G,) for logging.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 gamma: float = 0.99, lambda_: float = 0.95, n_groups: int = 1,
                 robust_lambda: float = 0.0, objective: Any = None, group_key: str = "group",
                 reward_key: str = "reward_by_group", **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.lambda_, self.n_groups = gamma, lambda_, int(n_groups)
        self.robust_lambda = float(robust_lambda)
        self.objective = objective or get_objective("worst_group")
        self.group_key, self.reward_key = group_key, reward_key
        self.stats: dict[str, np.ndarray] = {}

    def streams(self, episodes) -> tuple[np.ndarray, np.ndarray]:
        """``(groups (N,), rewards (N, G))`` over the (extended) episodes, in batch order."""
        groups, rewards = [], []
        for ep in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            n = len(ep)
            infos = ep.get_infos(slice(1, n + 1))  # info of step t = infos[t + 1]
            groups += [self._field(info, self.group_key, ep.id_, t) for t, info in enumerate(infos)]
            vec = np.zeros((n, self.n_groups))
            for t, info in enumerate(infos[:-1]):  # the last one is PPO's artificial timestep
                vec[t] = self._field(info, self.reward_key, ep.id_, t)
            rewards.append(vec)
        return np.asarray(groups, np.int64), np.concatenate(rewards) if rewards else np.zeros((0, self.n_groups))

    def _field(self, info: Any, key: str, episode_id: str, t: int):
        try:
            value = info[key]
        except (KeyError, TypeError):
            raise KeyError(f"group-robust PPO needs info[{key!r}] in the info of every step; "
                           f"episode {episode_id} timestep {t} has info keys "
                           f"{sorted(info) if isinstance(info, dict) else info!r}") from None
        if key == self.group_key:
            g = int(value)
            if not 0 <= g < self.n_groups:
                raise ValueError(f"info[{key!r}] = {g} at episode {episode_id} timestep {t}; "
                                 f"allowed: 0..{self.n_groups - 1} (n_groups {self.n_groups})")
            return g
        vec = np.asarray(value, np.float64).reshape(-1)
        if vec.shape != (self.n_groups,):
            raise ValueError(f"info[{key!r}] has {vec.size} entries at episode {episode_id} "
                             f"timestep {t}; expected one per group ({self.n_groups})")
        return vec

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None,
                 **kwargs) -> Any:
        groups, rewards = self.streams(episodes)
        for module_id, b in batch.items():
            module = rl_module[module_id].unwrapped()
            if not isinstance(module, GroupValuePPOModule):
                continue
            self._add_streams(module, b, groups, rewards)
        return batch

    def _add_streams(self, module, b: dict, groups: np.ndarray, rewards: np.ndarray) -> None:
        from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

        with torch.no_grad():
            values = _numpy(module.compute_group_values(b)).astype(np.float64)
        term, trunc = _numpy(b[Columns.TERMINATEDS]), _numpy(b[Columns.TRUNCATEDS])
        targets = np.stack([compute_value_targets(
            values=values[:, g], rewards=rewards[:, g], terminateds=term, truncateds=trunc,
            gamma=self.gamma, lambda_=self.lambda_) for g in range(self.n_groups)], 1)
        mask = _numpy(b[Columns.LOSS_MASK]).astype(bool) if Columns.LOSS_MASK in b else None
        group_adv = targets - values
        j, share = per_capita_objectives(targets, groups, self.n_groups, mask)
        state = RobustState(q=_numpy(module.robust_q).astype(np.float64).copy())
        weights = self.objective.weights(j, state)
        module.robust_q.copy_(torch.as_tensor(state.q))
        adv = b[Postprocessing.ADVANTAGES]
        if self.robust_lambda > 0 and self.n_groups > 1:
            total = _numpy(adv).astype(np.float64)
            mixed = mix_advantages(total, robust_advantages(group_adv, total, weights),
                                   self.robust_lambda, mask)
            b[Postprocessing.ADVANTAGES] = torch.as_tensor(mixed, dtype=adv.dtype, device=adv.device)
        std_adv = np.stack([standardize(group_adv[:, g], mask) for g in range(self.n_groups)], 1)
        as_tensor = lambda x, dt=torch.float32: torch.as_tensor(x, dtype=dt, device=adv.device)
        b[GROUP_COLUMN] = as_tensor(groups, torch.int64)
        b[GROUP_VALUE_TARGETS] = as_tensor(targets)
        b[GROUP_ADVANTAGES] = as_tensor(std_adv)
        self.stats = {"weights": weights, "j": j, "share": share}


# ------------------------------------------------------------------------- learner
class GroupRobustPPOTorchLearner(PPOTorchLearner):
    """PPO on A_mix (set by :class:`GroupStreams`) plus the group value heads' regression.

    ``compute_loss_for_module`` calls ``super()`` (PPO's clipped loss, now on A_mix) and adds
    ``vf_loss_coeff`` x the clipped squared error of every group head against its GAE target.
    """

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        c = self.config
        self._group_streams = GroupStreams(
            gamma=c.gamma, lambda_=c.lambda_, n_groups=c.n_groups, robust_lambda=c.robust_lambda,
            objective=c.robust_objective(), group_key=c.group_info_key,
            reward_key=c.reward_info_key)
        if self._learner_connector is not None:
            self._learner_connector.append(self._group_streams)  # after PPO's GAE

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        ppo_loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if GROUP_VALUE_TARGETS not in batch:
            return ppo_loss
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)
        keep = mask if mask is not None else torch.ones(len(batch[GROUP_COLUMN]), dtype=torch.bool)
        err = torch.clamp((module.compute_group_values(batch) - batch[GROUP_VALUE_TARGETS]) ** 2,
                          0, config.vf_clip_param).sum(-1)
        group_vf_loss = err[keep].mean()
        if config.fairgrad:
            self._fairgrad_objectives()[module_id] = self._group_policy_spread(
                module, batch, fwd_out, keep, config.clip_param)
        self._log_group_stats(module_id, group_vf_loss)
        return ppo_loss + config.vf_loss_coeff * group_vf_loss

    @staticmethod
    def _group_policy_spread(module, batch, fwd_out, keep, clip: float) -> list:
        """FairGrad's per-group objectives from the per-group streams: with L_g the clipped
        policy loss on group g's own (standardized) advantages at every timestep,
        ``0.5·(L_g - mean_h L_h)²`` for each g."""
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp, old = dist.logp(batch[Columns.ACTIONS])[keep], batch[Columns.ACTION_LOGP][keep]
        adv = batch[GROUP_ADVANTAGES][keep]
        losses = torch.stack([-clipped_surrogate(logp, old, adv[:, g], clip).mean()
                              for g in range(adv.shape[1])])
        return [0.5 * (lg - losses.mean()) ** 2 for lg in losses] if len(losses) > 1 else []

    def _fairgrad_objectives(self) -> dict:
        if not hasattr(self, "_fairgrad_pending"):
            self._fairgrad_pending: dict = {}
        return self._fairgrad_pending

    @override(PPOTorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        """PPO's gradients, or with ``fairgrad`` the projected sum of the objectives' ones."""
        pending = self._fairgrad_objectives()
        fairness = [f for objs in pending.values() for f in objs]
        pending.clear()
        if not fairness:
            return super().compute_gradients(loss_per_module, **kwargs)
        from algorithms.fairgrad import flat_grads, project_conflicting

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

    def _log_group_stats(self, module_id, group_vf_loss) -> None:
        stats: dict[str, Any] = {GROUP_VF_LOSS_KEY: group_vf_loss.detach()}
        s = self._group_streams.stats
        for g in range(len(s.get("weights", ()))):
            stats[f"robust/weight/{g}"] = float(s["weights"][g])
            if np.isfinite(s["j"][g]):
                stats[f"group/{g}/value_per_capita"] = float(s["j"][g])
            stats[f"group/{g}/share"] = float(s["share"][g])
        self.metrics.log_dict(stats, key=module_id, window=1)


# -------------------------------------------------------------------------- config
class GroupRobustPPOConfig(PPOConfig):
    """PPOConfig plus the group-robust fields.

    ``robust_lambda`` (λ in [0, 1]), ``robust_mode`` (an :data:`ROBUST_OBJECTIVES` name),
    ``robust_eta`` (GroupDRO step size), ``robust_ggf_base`` (ggf weight ratio), ``n_groups``
    (G: value heads, entries of the reward vector), ``group_info_key`` / ``reward_info_key``
    (the env's step-info keys of the decided patient's group and of the (G,) reward vector),
    ``fairgrad``.
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or GroupRobustPPO)
        self.robust_lambda = 0.3
        self.robust_mode = "worst_group"
        self.robust_eta = 0.5
        self.robust_ggf_base = 2.0
        self.n_groups = 1
        self.group_info_key = "group"
        self.reward_info_key = "reward_by_group"
        self.fairgrad = False

    _FIELDS = ("robust_lambda", "robust_mode", "robust_eta", "robust_ggf_base", "n_groups",
               "group_info_key", "reward_info_key", "fairgrad")

    @override(PPOConfig)
    def training(self, **kwargs) -> GroupRobustPPOConfig:
        own = {k: kwargs.pop(k) for k in self._FIELDS if k in kwargs}
        super().training(**kwargs)
        for key, value in own.items():
            if value is not None:
                setattr(self, key, value)
        return self

    def robust_objective(self):
        """The :data:`ROBUST_OBJECTIVES` entry named by ``robust_mode``, with its parameters."""
        params = {"worst_group": {"eta": self.robust_eta},
                  "ggf": {"base": self.robust_ggf_base}}.get(self.robust_mode, {})
        return get_objective(self.robust_mode, **params)

    @override(PPOConfig)
    def get_default_learner_class(self):
        return GroupRobustPPOTorchLearner

    @override(PPOConfig)
    def get_default_rl_module_spec(self):
        spec = super().get_default_rl_module_spec()
        spec.module_class = GroupValuePPOModule
        return spec

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        lam = self.robust_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"robust_lambda: got {lam!r}; allowed: a number in [0, 1]")
        if self.robust_mode not in ROBUST_OBJECTIVES:
            raise ValueError(f"robust_mode: got {self.robust_mode!r}; allowed: "
                             f"{', '.join(ROBUST_OBJECTIVES.names())}")
        if isinstance(self.n_groups, bool) or not isinstance(self.n_groups, int) \
                or self.n_groups < 1:
            raise ValueError(f"n_groups: got {self.n_groups!r}; allowed: an int >= 1")
        for key in ("group_info_key", "reward_info_key"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key}: got {getattr(self, key)!r}; allowed: a non-empty str")
        self.robust_objective()  # robust_eta / robust_ggf_base -> ConfigError naming the field
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
class EpisodeMetricsCallback(RLlibCallback):
    """Env-runner callback: per-group returns and the env's ``episode_metrics``.

    Logs ``group/<id>/return`` (the sum of the group's reward stream) and
    ``group/<id>/return_per_capita`` (that over the decisions about the group), and every
    finite scalar of the last step's ``info["episode_metrics"]`` (``fairness/...``,
    ``util/...``, ``group/<name>/...``, ``wait/...``), as means over the last
    :data:`EPISODE_WINDOW` episodes.
    """

    group_info_key = "group"

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        infos = list(episode.get_infos())
        rewards = episode.get_rewards()
        for g, (ret, n) in per_group_returns(rewards, infos, self.group_info_key).items():
            metrics_logger.log_value(f"group/{g}/return", ret, reduce="mean", window=EPISODE_WINDOW)
            if n:
                metrics_logger.log_value(f"group/{g}/return_per_capita", ret / n, reduce="mean",
                                         window=EPISODE_WINDOW)
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
    hidden_sizes: list[int], robust_lambda: float = 0.0, robust_mode: str = "worst_group",
    robust_eta: float = 0.5, robust_ggf_base: float = 2.0, n_groups: int = 1,
    group_info_key: str = "group", episode_callbacks: bool = True, fairgrad: bool = False,
    batched_env: bool = False, discrete_actions: bool = False,
):
    """A PPOConfig (or GroupRobustPPOConfig when ``robust``) on the new API stack.

    Env-runner restarts are on, every seed is explicit (``debugging(seed=...)`` seeds
    torch/numpy/random in the learner and ``seed + worker index`` in the env runners).
    ``batched_env``: the env runners build the env's own batched VectorEnv
    (``gym_env_vectorize_mode="vector_entry_point"``: RLlib calls the registered creator
    with ``num_envs`` in its env config); otherwise gymnasium's ``SyncVectorEnv`` of single
    envs. Both hand RLlib a dict of per-env info arrays that ``DictInfoToList`` splits into
    one info dict per env, so connectors and callbacks see the same infos either way.
    ``discrete_actions``: the env's action space is Discrete, so RLlib's action
    unsquashing (``normalize_actions``, an identity on integer actions that deep-copies and
    walks every action: ~12% of a sampling step here) is switched off.
    """
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if robust:
        register()
        config = GroupRobustPPOConfig().training(
            robust_lambda=float(robust_lambda), robust_mode=robust_mode,
            robust_eta=float(robust_eta), robust_ggf_base=float(robust_ggf_base),
            n_groups=int(n_groups), group_info_key=group_info_key, fairgrad=bool(fairgrad))
    else:
        config = PPOConfig()
    model = DefaultModelConfig(fcnet_hiddens=list(hidden_sizes), vf_share_layers=False)
    config = (
        config.environment(env, env_config=dict(env_config),
                           normalize_actions=not discrete_actions)
        .env_runners(num_env_runners=num_env_runners,
                     num_envs_per_env_runner=num_envs_per_env_runner,
                     gym_env_vectorize_mode=VECTOR_ENTRY_POINT if batched_env else "sync",
                     rollout_fragment_length="auto")
        .training(train_batch_size_per_learner=train_batch_size, minibatch_size=minibatch_size,
                  num_epochs=num_epochs, lr=lr, gamma=gamma, lambda_=gae_lambda,
                  clip_param=clip_param, entropy_coeff=entropy_coeff)
        .rl_module(model_config={**dataclasses.asdict(model), "n_groups": int(n_groups)}
                   if robust else model)
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


#: what ``restore_from_path`` needs of a checkpoint (RLlib 2.60): it skips a missing component
#: folder silently (the run would go on with fresh weights), so a resume checks these first
CHECKPOINT_FILES = ("rllib_checkpoint.json", "algorithm_state.pkl", "learner_group/state.pkl",
                    "learner_group/learner/state.pkl",
                    f"learner_group/learner/rl_module/{DEFAULT_MODULE}/module_state.pkl")


def missing_checkpoint_files(path: str | Path) -> list[str]:
    """The :data:`CHECKPOINT_FILES` that the checkpoint folder ``path`` lacks."""
    return [f for f in CHECKPOINT_FILES if not (Path(path) / f).is_file()]


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
@contextlib.contextmanager
def eval_mode(module):
    """The module in eval mode for a whole evaluation (RLlib's ``forward_inference`` switches a
    training module to eval and back on every call, walking every submodule twice)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        if was_training:
            module.train()


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


def redo_iteration(algo) -> None:
    """Count the last ``train()`` as not done: the next one gets its iteration number again.

    For an iteration without samples, in which RLlib's PPO made no update (its
    ``training_step`` returns early when every env runner failed). Ray 2.60 keeps the counter
    in ``Trainable._iteration``; the env-step counters did not move (nothing was sampled)."""
    algo._iteration -= 1


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
