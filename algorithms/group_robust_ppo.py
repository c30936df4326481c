"""Group-robust PPO on RLlib's new API stack.

Reference: the EquiRL hospital-allocation report (group-robust PPO for fair resource
allocation) and, for the ``worst_group`` mode, GroupDRO (Sagawa et al., 2020,
arXiv 1911.08731).

Objective, per learner minibatch::

    L = (1 - λ) · L_PPO + λ · L_robust

* ``L_PPO`` is RLlib's own PPO loss (clipped surrogate + value loss - entropy + KL),
  computed by ``PPOTorchLearner.compute_loss_for_module`` (we call ``super()``).
* ``J_g`` is the per-group clipped surrogate objective: the mean over the group's valid
  timesteps of ``min(A·ρ, A·clip(ρ, 1-ε, 1+ε))`` (what PPO maximises, per group).
* ``robust_mode="gap"``: ``L_robust = max_g J_g - min_g J_g`` (the report's
  best-minus-worst-group gap).
* ``robust_mode="worst_group"``: ``L_robust = mean_g J_g - min_g J_g``, the worst group's
  shortfall (max-min in the GroupDRO style, written as an excess so that one group gives
  0 and λ=0 gives PPO exactly).

With one group both modes give ``L_robust = 0``; with λ = 0 the loss (and every gradient)
is PPO's bit for bit. Keep λ ≤ 0.5 to keep a positive weight on the mean objective.

Group ids reach the batch through :class:`AddGroupIdsToBatch`, a learner ConnectorV2
that reads ``info[group_key]`` (default ``"group"``) of every timestep. Convention (the
hospital simulators'): the info returned by ``step`` for action ``a_t`` names the group
of the patient that decision concerned, so timestep t's group is ``infos[t + 1]``
(``infos[0]`` is the reset info). PPO appends an artificial timestep per episode (its
info is a duplicate of the last one); it is masked out of the loss.

``fairgrad=True`` (FairGrad, arXiv 2504.14388; :mod:`algorithms.fairgrad`): the gradient of
the loss above and one fairness objective per group (``0.5·(L_g - mean_g L_g)²`` of the
per-group clipped-surrogate losses, :func:`algorithms.fairgrad.fairgrad_losses_from_groups`)
are taken separately, each is projected onto the normal plane of any other it conflicts
with, and their sum is applied (``compute_gradients``). Local learner only: torch DDP's
all-reduce hooks do not run for per-objective ``torch.autograd.grad`` calls.

Every RLlib-version-sensitive call of the project lives here or in
:mod:`algorithms.rllib_adapter` (pinned: ray 2.60).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

ALGO_NAME = "GroupRobustPPO"
GROUP_COLUMN = "group_id"
ROBUST_MODES = ("gap", "worst_group")

# Metric keys logged by the learner (under ``learners/<module_id>/``).
ROBUST_LOSS_KEY = "robust_loss"
GROUP_GAP_KEY = "group_gap"
PPO_LOSS_KEY = "ppo_total_loss"
FAIRGRAD_CONFLICTS_KEY = "fairgrad_conflicts"


# ----------------------------------------------------------------------------- math
def group_objectives(
    surrogate: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of ``surrogate`` per group.

    Args:
        surrogate: (T,) float, per-timestep objective (higher is better).
        groups: (T,) int64, group id per timestep (>= 0).
        mask: (T,) bool, valid timesteps (None: all valid).
    Returns:
        ``(ids, means, counts)``: (K,) int64 ids of the groups present, (K,) float
        means (differentiable w.r.t. ``surrogate``), (K,) int64 timestep counts.
    """
    if mask is not None:
        surrogate, groups = surrogate[mask], groups[mask]
    groups = groups.long()
    if groups.numel() == 0:
        empty = surrogate.new_zeros(0)
        return groups.new_zeros(0), empty, groups.new_zeros(0)
    size = int(groups.max().item()) + 1
    sums = surrogate.new_zeros(size).index_add(0, groups, surrogate)
    counts = torch.bincount(groups, minlength=size)
    present = counts > 0
    ids = torch.nonzero(present, as_tuple=False).flatten()
    return ids, sums[present] / counts[present].to(surrogate.dtype), counts[present]


def robust_term(objectives: torch.Tensor, mode: str) -> torch.Tensor:
    """``L_robust`` from per-group objectives.

    Args:
        objectives: (K,) per-group objectives ``J_g`` (K >= 0).
        mode: ``"gap"`` -> ``max J - min J``; ``"worst_group"`` -> ``mean J - min J``.
    Returns:
        scalar tensor; 0 when K <= 1.
    """
    if mode not in ROBUST_MODES:
        raise ValueError(f"robust_mode: got {mode!r}; allowed: {', '.join(ROBUST_MODES)}")
    if objectives.numel() <= 1:
        return objectives.sum() * 0.0
    worst = objectives.min()
    if mode == "gap":
        return objectives.max() - worst
    return objectives.mean() - worst


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's per-timestep clipped surrogate ``min(A·ρ, A·clip(ρ, 1-ε, 1+ε))``; all (T,)."""
    ratio = torch.exp(logp - old_logp)
    return torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))


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
        import numpy as np

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
    """PPOConfig plus ``robust_lambda``, ``robust_mode`` and ``group_info_key``.

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
