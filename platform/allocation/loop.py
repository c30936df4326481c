"""The one allocation training loop, used by ``platform.train group-robust-ppo|ppo`` and by
every ``platform.sweep`` trial.

Per iteration, top to bottom: **train** (``algo.train()``) -> **metrics** (flat, namespaced)
-> **recover** (after an iteration that sampled nothing, wait for the restarted env runners)
-> **evaluate** (after the last iteration: greedy episodes on held-out seeds) -> **emit**
(one :class:`Step` to the caller's sink). Iterations the sink has already logged (a replay
after a hard kill and a resume) are marked ``replayed`` and not logged again.

The callers differ only in their :class:`Sink`: where results go (MLflow in
:mod:`platform.allocation.train`, ``tune.report`` in :mod:`platform.sweep`), how a checkpoint
is saved and where a run resumes from.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from platform import faults
from platform.allocation import rllib
from platform.allocation.config import AllocationConfig
from typing import Any, Protocol

# result key in the learner -> metric name
_LEARNER_KEYS = {
    "total_loss": "loss/total", "policy_loss": "loss/policy", "vf_loss": "loss/vf",
    rllib.GROUP_VF_LOSS_KEY: "loss/group_vf", "entropy": "loss/entropy",
    "mean_kl_loss": "loss/kl", rllib.FAIRGRAD_CONFLICTS_KEY: "fairgrad/conflicts",
}
_LEARNER_PREFIXES = ("group/", "robust/")
_ENV_PREFIXES = ("fairness/", "util/", "group/", "wait/", "patients/")


@dataclass
class Step:
    """What one training iteration produced, handed to the sink."""

    iteration: int
    metrics: dict[str, float]          # iteration_metrics(...) of this iteration
    replayed: bool = False             # already logged by an earlier attempt: do not log again
    final: bool = False                # the last iteration (cfg.iterations)
    checkpoint: bool = False           # a checkpoint is due (every checkpoint_every, and the last)
    evaluation: Any = None             # final only: DataFrame of evaluation episodes (or None)
    curve: Any = None                  # this iteration's greedy evaluation (every eval_every,
    #                                    and the final one): DataFrame of episodes, or None


class Sink(Protocol):
    """Where a run's results and checkpoints go (MLflow run or Tune trial)."""

    def last_logged(self) -> int:
        """The last iteration already logged (0: none); later ones are new."""

    def restore(self, algo) -> None:
        """Load the checkpoint this run resumes from, if any."""

    def emit(self, step: Step, algo) -> None:
        """Log ``step`` (unless replayed) and save a checkpoint of ``algo`` if one is due."""


class FinalEvaluation:
    """A sink that logs nothing and keeps the final evaluation (tests, evidence scripts)."""

    def __init__(self) -> None:
        self.evaluation = None
        self.metrics: dict[str, float] = {}

    def last_logged(self) -> int:
        return 0

    def restore(self, algo) -> None:
        pass

    def emit(self, step: Step, algo) -> None:
        if step.final:
            self.evaluation, self.metrics = step.evaluation, step.metrics


# ------------------------------------------------------------------ the algorithm
def build_algo_config(cfg: AllocationConfig):
    """RLlib ``AlgorithmConfig`` for ``cfg``: GroupRobustPPO or PPO, restarts on, seeded."""
    from platform.allocation import scenarios

    env_name = scenarios.register_with_tune(cfg.scenario)
    names, discrete = _probe(cfg)
    return rllib.build_ppo_config(
        robust=cfg.algorithm == "group-robust-ppo", env=env_name,
        env_config=cfg.env_creator_config(), seed=cfg.seed,
        num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=cfg.num_envs_per_env_runner,
        train_batch_size=cfg.train_batch_size, minibatch_size=cfg.minibatch_size,
        num_epochs=cfg.num_epochs, lr=cfg.lr, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        clip_param=cfg.clip_param, entropy_coeff=cfg.entropy_coeff,
        hidden_sizes=cfg.hidden_sizes, robust_lambda=cfg.robust_lambda,
        robust_mode=cfg.robust_mode, robust_eta=cfg.robust_eta,
        robust_ggf_base=cfg.robust_ggf_base, n_groups=len(names), fairgrad=cfg.fairgrad,
        batched_env=vectorize_mode(cfg) == "batched", discrete_actions=discrete,
    )


_FALLBACK_SAID: set[str] = set()


def vectorize_mode(cfg: AllocationConfig) -> str:
    """``cfg.vectorize_mode``; says once per scenario (stderr) when ``batched`` was asked
    for and the scenario has no batched env, so its envs are stepped by SyncVectorEnv."""
    mode = cfg.vectorize_mode
    if cfg.env_vectorize == "batched" and mode != "batched" and cfg.scenario not in _FALLBACK_SAID:
        _FALLBACK_SAID.add(cfg.scenario)
        print(f"env_vectorize: scenario {cfg.scenario!r} has no batched env; its "
              f"{cfg.num_envs_per_env_runner} env(s) per runner are stepped by gymnasium's "
              "SyncVectorEnv", file=sys.stderr, flush=True)
    return mode


def build_algo(cfg: AllocationConfig):
    """Build the RLlib Algorithm of ``cfg`` (log dir under the storage root, never ~), with
    ``cfg.torch_threads`` intra-op threads in this process."""
    from platform.cluster import storage_root

    import torch

    torch.set_num_threads(cfg.torch_threads)
    return rllib.build_algo(build_algo_config(cfg), storage_root(), "allocation")


@contextlib.contextmanager
def algorithm(cfg: AllocationConfig) -> Iterator[Any]:
    """``with algorithm(cfg) as algo``: the built Algorithm, stopped on the way out."""
    algo = build_algo(cfg)
    try:
        yield algo
    finally:
        algo.stop()


def group_names(cfg: AllocationConfig) -> list[str]:
    """Group names of the scenario's env (``group/<id>/...`` become ``group/<name>/...``)."""
    return _probe(cfg)[0]


def _probe(cfg: AllocationConfig) -> tuple[list[str], bool]:
    """``(group names, whether the action space is Discrete)`` of the scenario's env."""
    from platform.allocation import scenarios
    from platform.allocation.evaluate import group_names_of

    import gymnasium as gym

    with scenarios.make(cfg.scenario, cfg.env_creator_config()) as probe:
        return group_names_of(probe), isinstance(probe.action_space, gym.spaces.Discrete)


# -------------------------------------------------------------------- the metrics
def _scalar(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rename_group(key: str, names: list[str] | None) -> str:
    """``group/<id>/...`` and ``robust/weight/<id>`` with the group's name for its id."""
    parts = key.split("/")
    at = 1 if parts[0] == "group" else 2 if parts[:2] == ["robust", "weight"] else None
    if names and at is not None and len(parts) > at and parts[at].isdigit():
        i = int(parts[at])
        if i < len(names):
            parts[at] = str(names[i])
    return "/".join(parts)


def iteration_metrics(result: dict, names: list[str] | None = None) -> dict[str, float]:
    """Flat, namespaced metrics of one ``algo.train()`` result.

    Keys: ``training_iteration``, ``return_mean``, ``episode_len_mean``, ``env_steps_per_s``,
    ``env_steps_total``, ``time/iteration_s``, ``loss/...`` (incl. ``loss/group_vf``),
    ``group/<g>/return|return_per_capita`` (episodes), ``group_gap`` (best minus worst
    per-capita return), ``group/<g>/value_per_capita|share`` and ``robust/weight/<g>``
    (learner), and the env's episode metrics
    (``fairness/dp_score|eo_score|wte_score|individual_score``, ``util/...``,
    ``group/<name>/...``, ``wait/...``). Group ids become ``names`` when given.
    Non-finite values are dropped.
    """
    out: dict[str, float] = {"training_iteration": float(rllib.iteration_of(result))}
    learner, runners = rllib.learner_results(result), rllib.env_runner_results(result)
    for key, value in learner.items():
        name = _LEARNER_KEYS.get(key) or (key if key.startswith(_LEARNER_PREFIXES) else None)
        if name and (v := _scalar(value)) is not None:
            out[_rename_group(name, names)] = v
    for key, value in runners.items():
        if key.startswith(_ENV_PREFIXES) and (v := _scalar(value)) is not None:
            out[_rename_group(key, names)] = v
    per_capita = [v for k, v in out.items() if k.startswith("group/")
                  and k.endswith("/return_per_capita")]
    if len(per_capita) >= 2:  # best minus worst group, in per-capita return
        out["group_gap"] = max(per_capita) - min(per_capita)
    for src, dst in (("episode_return_mean", "return_mean"),
                     ("episode_len_mean", "episode_len_mean")):
        if (v := _scalar(runners.get(src))) is not None:
            out[dst] = v
    seconds = _scalar(rllib.seconds_of(result))
    steps = _scalar(rllib.env_steps_this_iter(result))
    if seconds and steps is not None:
        out["env_steps_per_s"] = steps / seconds
        out["time/iteration_s"] = seconds
    out["env_steps_total"] = rllib.env_steps_lifetime(result)
    out["fault_tolerance/env_runner_restarts"] = float(rllib.num_env_runner_restarts(result))
    return out


# ----------------------------------------------------------------------- the loop
def train(cfg: AllocationConfig, sink: Sink) -> int:
    """Build, restore (``sink.restore``), run :func:`iterate`, stop; returns the last iteration."""
    names = group_names(cfg)
    with algorithm(cfg) as algo:
        sink.restore(algo)
        return iterate(algo, cfg, sink, names)


def iterate(algo, cfg: AllocationConfig, sink: Sink, names: list[str] | None = None) -> int:
    """Train ``algo`` up to ``cfg.iterations``, one :class:`Step` per iteration to ``sink``."""
    logged = sink.last_logged()
    iteration = algo.iteration
    if iteration >= cfg.iterations:  # resumed a run that already reached its total
        sink.emit(Step(iteration, {}, replayed=True, final=True, checkpoint=True,
                       evaluation=evaluate(algo, cfg)), algo)
    redone = 0
    while iteration < cfg.iterations:
        result = algo.train()                                       # train
        faults.check("allocation.iteration")  # crash tests (EQUIRL_FAULT); a no-op otherwise
        metrics = iteration_metrics(result, names)                  # metrics
        iteration = int(metrics["training_iteration"])
        if recover(algo, cfg, result, iteration):                   # recover
            # no samples, so no update: the iteration is done again under its number once
            # the runners are back, and every logged iteration trains on a full batch
            redone += 1
            if redone > MAX_REDONE:
                raise RuntimeError(f"iteration {iteration}: the env runners sampled nothing "
                                   f"{redone} times in a row (restarted each time); giving up")
            rllib.redo_iteration(algo)
            iteration -= 1
            continue
        redone = 0
        final = iteration >= cfg.iterations
        evaluation = evaluate(algo, cfg) if final else None                  # evaluate
        curve = curve_evaluation(algo, cfg, iteration, evaluation)
        metrics.update(curve_metrics_of(curve))
        sink.emit(Step(iteration, metrics, replayed=iteration <= logged, final=final,
                       checkpoint=final or checkpoint_due(cfg, iteration),
                       evaluation=evaluation, curve=curve), algo)            # emit
    return iteration


#: iterations without samples in a row (each followed by a wait for the restarted runners)
#: before the run fails
MAX_REDONE = 3


def recover(algo, cfg: AllocationConfig, result: dict, iteration: int) -> bool:
    """After an iteration without samples (a remote env runner died while sampling and is
    restarting), wait until every env runner is back, so the next iteration samples again.
    True if it waited (:func:`iterate` then does the iteration again)."""
    if not cfg.num_env_runners or rllib.env_steps_this_iter(result) > 0:
        return False
    print(f"iteration {iteration}: no samples (an env runner is restarting); waiting for it",
          file=sys.stderr, flush=True)
    rllib.wait_for_env_runners(algo)
    return True


#: prefix of the evaluation-curve metrics (``eval_every``)
CURVE_PREFIX = "eval_curve/"


def curve_evaluation(algo, cfg: AllocationConfig, iteration: int, evaluation=None):
    """Every ``eval_every`` iterations and after the last: the greedy evaluation episodes
    (``evaluation``: the final one, reused). None when ``eval_every`` is 0 or the iteration is
    not due."""
    if not cfg.eval_every or (evaluation is None and iteration % cfg.eval_every):
        return None
    if evaluation is None:
        from platform.allocation import evaluate as evaluation_lib

        evaluation = evaluation_lib.evaluate(algo, cfg, cfg.eval_episodes, cfg.eval_seeds())
    return evaluation


def curve_metrics_of(curve) -> dict[str, float]:
    """The return, fairness scores and per-capita group returns of a curve evaluation as
    ``eval_curve/...`` ({} for None)."""
    if curve is None:
        return {}
    from platform.allocation import evaluate as evaluation_lib

    means = evaluation_lib.summarize(curve, prefix="")
    return {CURVE_PREFIX + k: v for k, v in means.items()
            if k == "return" or k.startswith("fairness/") or k.endswith("/return_per_capita")}


def curve_metrics(algo, cfg: AllocationConfig, iteration: int, evaluation=None) -> dict[str, float]:
    """:func:`curve_metrics_of` the :func:`curve_evaluation` of ``iteration``."""
    return curve_metrics_of(curve_evaluation(algo, cfg, iteration, evaluation))


def checkpoint_due(cfg: AllocationConfig, iteration: int) -> bool:
    return bool(cfg.checkpoint_every) and iteration % cfg.checkpoint_every == 0


def evaluate(algo, cfg: AllocationConfig):
    """The evaluation episodes of ``cfg`` (DataFrame), or None when ``eval_episodes`` is 0."""
    if not cfg.eval_episodes:
        return None
    from platform.allocation import evaluate as evaluation

    return evaluation.evaluate(algo, cfg, cfg.eval_episodes, cfg.eval_seeds())
