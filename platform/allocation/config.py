"""``AllocationConfig``: the one typed config of ``platform.train group-robust-ppo|ppo`` and of
every ``platform.sweep group-robust-ppo`` trial.

Built by :func:`platform.cli.config_from_args` (defaults < ``--config FILE.yaml`` <
``--set key=value`` < explicit flags). Each field is declared once with
:func:`base.config.option`: its doc feeds ``--help`` and the table in docs/allocation.md,
and its ``track`` decides whether (and as what) it is an MLflow param of the run
(:func:`base.config.tracked_params`). Invariants are checked here, in ``__post_init__``,
with errors that name the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from base.config import option
from base.errors import ConfigError, require

ALGORITHMS = ("group-robust-ppo", "ppo")
#: how an env runner steps its envs (``env_vectorize``)
VECTORIZE = ("batched", "sync")
# Evaluation seeds must stay away from the seeds RLlib derives for training envs
# (seed + small worker/vector offsets).
EVAL_SEED_MARGIN = 10_000
#: the largest training seed: RLlib seeds numpy's global generator (< 2**32) with it plus
#: small per-runner offsets
MAX_SEED = 2**31 - 1


_ENVS_BUILT: set[tuple[str, str]] = set()  # (scenario, env config) that check_env built


def check_env(cfg: AllocationConfig | HeuristicConfig) -> None:
    """Build the scenario's env once: a bad ``group_key`` or ``env_config`` fails here with a
    ConfigError naming the field, not in an env runner after Ray has started."""
    from platform.allocation import scenarios

    key = (cfg.scenario, repr(cfg.env_creator_config()))
    if key in _ENVS_BUILT:  # e.g. every cell of a sweep grid
        return
    try:
        scenarios.make(cfg.scenario, cfg.env_creator_config()).close()
    except ConfigError as exc:
        field = "group_key" if exc.field == "group_key" else f"env_config.{exc.field}"
        raise ConfigError(field, str(exc)[len(exc.field) + 2:]) from None
    except TypeError as exc:  # a gym id's constructor got an unknown keyword
        raise ConfigError("env_config", str(exc)) from None
    _ENVS_BUILT.add(key)


def _is_ppo(cfg: AllocationConfig) -> bool:
    return cfg.algorithm == "ppo"


@dataclass
class AllocationConfig:
    """Hospital-allocation training run (one MLflow run)."""

    algorithm: Literal["group-robust-ppo", "ppo"] = option(
        "group-robust-ppo",
        "group-robust-ppo (RLlib PPO + group-robust loss) or ppo (plain RLlib PPO); the command "
        "sets it")
    scenario: str = option(
        "rural",
        "hospital scenario: a name in the scenario table of envs/hospital/config.py (e.g. rural) "
        "or its gym id (HospitalRural-v0); --scenario's help lists them")
    robust_lambda: float = option(
        0.3, "λ in [0, 1]: PPO is trained on A_mix = (1-λ)·A + λ·A_robust (0: plain PPO; "
        "logged as 0.0 for ppo)",
        track=lambda cfg: 0.0 if _is_ppo(cfg) else cfg.robust_lambda)
    robust_mode: str = option(
        "worst_group",
        "how the per-group advantages form A_robust: worst_group (online GroupDRO weights, "
        "Sagawa et al. 2020), ggf (generalized Gini welfare, Siddique et al. 2020), gap (worst "
        "minus best group; also lowers the best-off group); logged as none for ppo",
        track=lambda cfg: "none" if _is_ppo(cfg) else cfg.robust_mode)
    robust_eta: float = option(
        0.5, "GroupDRO step size η > 0 (robust_mode worst_group): q_g ∝ q_g·exp(η·loss_g)",
        track=lambda cfg: cfg.robust_eta if cfg.robust_mode == "worst_group" and not _is_ppo(cfg)
        else None)
    robust_ggf_base: float = option(
        2.0, "generalized Gini weights w_i = base^-(i-1), worst group first (robust_mode ggf; > 1)",
        track=lambda cfg: cfg.robust_ggf_base if cfg.robust_mode == "ggf" and not _is_ppo(cfg)
        else None)
    fairgrad: bool = option(
        False,
        "FairGrad (arXiv 2504.14388): project the per-group policy-loss gradients against the "
        "task gradient (group-robust-ppo only; local learner)")
    group_key: str = option(
        "age_group",
        "patient attribute (or intersection, e.g. age_group+sex) that defines the groups")
    env_config: dict[str, Any] = option(
        {}, "extra keyword arguments for the simulator (envs.hospital.make_env), e.g. "
        "env_config.max_decisions=200")
    seed: int = option(0, "training seed (torch, numpy, env runners)")
    iterations: int = option(20, "training iterations (total; --resume continues up to it)")
    num_env_runners: int = option(
        0, "remote env-runner actors (0: sample in the driver process, the fastest on one "
        "machine: PPO samples and learns in turn, so a remote runner only adds a copy of "
        "every batch; use several on a cluster)")
    num_envs_per_env_runner: int = option(
        64, "envs stepped together per env runner (64: measured fastest for the batched "
        "hospital env, benchmarks/allocation_throughput.py; each env runs "
        "train_batch_size / (64 x runners) steps per iteration)")
    env_vectorize: Literal["batched", "sync"] = option(
        "batched",
        "how an env runner steps its num_envs_per_env_runner envs: batched (the scenario's "
        "numpy vector env, RLlib gym_env_vectorize_mode=vector_entry_point; a scenario without "
        "one, e.g. starved, falls back to sync and says so) or sync (gymnasium SyncVectorEnv of "
        "single envs); logged as the mode actually used",
        track=lambda cfg: cfg.vectorize_mode)
    train_batch_size: int = option(
        8192, "env steps per training iteration (8192 = 128 decisions of each of 64 hospitals; "
        "20 iterations = 163,840 decisions, about 410 episodes of 400)")
    minibatch_size: int = option(
        1024, "SGD minibatch size (<= train_batch_size; 8192 / 1024 x 5 epochs = 40 updates "
        "per iteration)")
    num_epochs: int = option(5, "SGD passes over each train batch")
    lr: float = option(3e-4, "Adam learning rate")
    gamma: float = option(0.99, "discount factor in (0, 1]")
    gae_lambda: float = option(0.95, "GAE λ in [0, 1]")
    clip_param: float = option(0.2, "PPO clip ε > 0")
    entropy_coeff: float = option(0.0, "entropy bonus coefficient >= 0")
    hidden_sizes: list[int] = option([64, 64], "policy/value MLP hidden sizes")
    torch_threads: int = option(
        1, "torch intra-op threads of the process that learns (and samples, with 0 env "
        "runners): the small MLPs gain nothing from more, and an idle OpenMP thread spins "
        "on a core that a concurrent trial or env runner needs")
    eval_episodes: int = option(5, "greedy evaluation episodes after training (0: skip)")
    eval_every: int = option(
        0, "also evaluate every N iterations on the same seeds and log eval_curve/return, "
        "eval_curve/fairness/*_score and eval_curve/group/<g>/return_per_capita per iteration "
        "(the curve platform.report's convergence check reads; 0: only after training)")
    eval_seed_base: int = option(
        1_000_000,
        f"evaluation episode i uses seed eval_seed_base + i (>= seed + {EVAL_SEED_MARGIN})")
    checkpoint_every: int = option(5, "checkpoint every N iterations (0: only at the end)")
    checkpoint_dir: str | None = option(
        None,
        "where checkpoints go (default <storage>/checkpoints/allocation/<experiment>/<run name>)",
        track=False)
    run_name: str | None = option(
        None, "MLflow run name; --resume picks the latest run with this name "
        "(default <algorithm>-<scenario>-l<λ>-<mode>-s<seed>)", track=False)

    def __post_init__(self) -> None:
        require(self.algorithm in ALGORITHMS, "algorithm",
                f"got {self.algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
        require(isinstance(self.scenario, str) and bool(self.scenario), "scenario",
                "must be a non-empty scenario name")
        from platform.allocation import scenarios

        known = scenarios.names()
        require(self.scenario in known, "scenario",
                f"got {self.scenario!r}; allowed: {', '.join(known)}")
        require(0.0 <= self.robust_lambda <= 1.0, "robust_lambda",
                f"got {self.robust_lambda}; allowed: a number in [0, 1]")
        from algorithms.group_robust import ROBUST_OBJECTIVES

        require(self.robust_mode in ROBUST_OBJECTIVES, "robust_mode",
                f"got {self.robust_mode!r}; allowed: {', '.join(ROBUST_OBJECTIVES.names())}")
        require(self.robust_eta > 0, "robust_eta", f"got {self.robust_eta}; must be > 0")
        require(self.robust_ggf_base > 1, "robust_ggf_base",
                f"got {self.robust_ggf_base}; must be > 1 (weights decrease from worst to best)")
        require(not (self.fairgrad and self.algorithm == "ppo"), "fairgrad",
                "is an option of group-robust-ppo; allowed with ppo: false")
        require(bool(self.group_key), "group_key", "must name an attribute, e.g. age_group")
        require(self.iterations > 0, "iterations", f"got {self.iterations}; must be >= 1")
        require(self.num_env_runners >= 0, "num_env_runners",
                f"got {self.num_env_runners}; must be >= 0")
        require(self.env_vectorize in VECTORIZE, "env_vectorize",
                f"got {self.env_vectorize!r}; allowed: {', '.join(VECTORIZE)}")
        require(self.num_envs_per_env_runner >= 1, "num_envs_per_env_runner",
                f"got {self.num_envs_per_env_runner}; must be >= 1")
        require(self.train_batch_size >= 1, "train_batch_size",
                f"got {self.train_batch_size}; must be >= 1")
        require(1 <= self.minibatch_size <= self.train_batch_size, "minibatch_size",
                f"got {self.minibatch_size}; allowed: 1..train_batch_size "
                f"({self.train_batch_size})")
        require(self.num_epochs >= 1, "num_epochs", f"got {self.num_epochs}; must be >= 1")
        require(self.lr > 0, "lr", f"got {self.lr}; must be > 0")
        require(0.0 < self.gamma <= 1.0, "gamma", f"got {self.gamma}; allowed: (0, 1]")
        require(0.0 <= self.gae_lambda <= 1.0, "gae_lambda",
                f"got {self.gae_lambda}; allowed: [0, 1]")
        require(self.clip_param > 0, "clip_param", f"got {self.clip_param}; must be > 0")
        require(self.entropy_coeff >= 0, "entropy_coeff", f"got {self.entropy_coeff}; must be >= 0")
        require(self.torch_threads >= 1, "torch_threads", f"got {self.torch_threads}; must be >= 1")
        require(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
                "hidden_sizes", f"got {self.hidden_sizes}; need >= 1 positive sizes")
        require(self.eval_episodes >= 0, "eval_episodes", f"got {self.eval_episodes}; must be >= 0")
        require(self.eval_every >= 0, "eval_every", f"got {self.eval_every}; must be >= 0")
        require(not (self.eval_every and not self.eval_episodes), "eval_every",
                f"got {self.eval_every} with eval_episodes 0; evaluate at least one episode")
        require(self.eval_seed_base >= self.seed + EVAL_SEED_MARGIN, "eval_seed_base",
                f"got {self.eval_seed_base}; must be >= seed + {EVAL_SEED_MARGIN} "
                f"({self.seed + EVAL_SEED_MARGIN}) so evaluation seeds differ from training seeds")
        require(self.checkpoint_every >= 0, "checkpoint_every",
                f"got {self.checkpoint_every}; must be >= 0")
        require(0 <= self.seed <= MAX_SEED, "seed", f"got {self.seed}; allowed: 0..{MAX_SEED}")
        check_env(self)

    @property
    def name(self) -> str:
        """Run name: explicit ``run_name`` or ``<algorithm>-<scenario>-l<λ>-<mode>-s<seed>``."""
        if self.run_name:
            return self.run_name
        lam = f"-l{self.robust_lambda:g}-{self.robust_mode}" if self.algorithm != "ppo" else ""
        return f"{self.algorithm}-{self.scenario}{lam}-s{self.seed}"

    @property
    def vectorize_mode(self) -> str:
        """The mode the env runners use: ``batched`` when asked for and the scenario has a
        batched env (:func:`platform.allocation.scenarios.vectorized`), else ``sync``."""
        from platform.allocation import scenarios

        if self.env_vectorize == "batched" and scenarios.vectorized(self.scenario):
            return "batched"
        return "sync"

    def env_creator_config(self) -> dict[str, Any]:
        """Keyword arguments of the simulator: ``group_key`` plus ``env_config``."""
        return {"group_key": self.group_key, **self.env_config}

    def eval_seeds(self, episodes: int | None = None) -> list[int]:
        n = self.eval_episodes if episodes is None else episodes
        return [self.eval_seed_base + i for i in range(n)]

    def replace(self, **changes: Any) -> AllocationConfig:
        return dataclasses.replace(self, **changes)


HEURISTIC = "heuristic"


def _rule_names() -> list[str]:
    from envs.hospital import rules

    return rules.names()


@dataclass
class HeuristicConfig:
    """Evaluation of a rule-based policy (``platform.train heuristic``; the sweep's baselines):
    no training, the same evaluation seeds and metrics as a trained run."""

    algorithm: Literal["heuristic"] = option(HEURISTIC, "heuristic; the command sets it")
    policy: str = option(
        "triage", "rule-based policy: a name in envs.hospital.rules.RULES (fcfs, triage, "
        "equity_triage, random; --policy's help lists them)")
    scenario: str = option(
        "rural", "hospital scenario (rules read the simulator's state: hospital presets, their "
        "gym ids and Hospital-v0)")
    group_key: str = option(
        "age_group",
        "patient attribute (or intersection, e.g. age_group+sex) that defines the groups")
    env_config: dict[str, Any] = option(
        {}, "extra keyword arguments for the simulator (envs.hospital.make_env)")
    seed: int = option(0, "seed of the rule's own randomness (random), with the episode's seed")
    eval_episodes: int = option(5, "evaluation episodes (>= 1)")
    eval_seed_base: int = option(
        1_000_000,
        f"evaluation episode i uses seed eval_seed_base + i (>= seed + {EVAL_SEED_MARGIN}); "
        "the same seeds as a trained run with the same value")
    run_name: str | None = option(
        None, "MLflow run name (default heuristic-<policy>-<scenario>-s<seed>)", track=False)

    def __post_init__(self) -> None:
        require(self.algorithm == HEURISTIC, "algorithm",
                f"got {self.algorithm!r}; allowed: {HEURISTIC}")
        known = _rule_names()
        require(self.policy in known, "policy",
                f"got {self.policy!r}; allowed: {', '.join(known)}")
        from platform.allocation import scenarios

        hospitals = scenarios.hospital_scenarios()
        require(self.scenario in hospitals, "scenario",
                f"got {self.scenario!r}; rules read the hospital simulator's state; allowed: "
                f"{', '.join(hospitals)}")
        require(bool(self.group_key), "group_key", "must name an attribute, e.g. age_group")
        require(self.eval_episodes >= 1, "eval_episodes",
                f"got {self.eval_episodes}; must be >= 1 (a rule is only evaluated)")
        require(self.eval_seed_base >= self.seed + EVAL_SEED_MARGIN, "eval_seed_base",
                f"got {self.eval_seed_base}; must be >= seed + {EVAL_SEED_MARGIN} "
                f"({self.seed + EVAL_SEED_MARGIN}) so evaluation seeds differ from training seeds")
        require(self.seed >= 0, "seed", f"got {self.seed}; must be >= 0")
        check_env(self)

    @property
    def name(self) -> str:
        return self.run_name or f"{HEURISTIC}-{self.policy}-{self.scenario}-s{self.seed}"

    def env_creator_config(self) -> dict[str, Any]:
        return {"group_key": self.group_key, **self.env_config}

    def eval_seeds(self, episodes: int | None = None) -> list[int]:
        n = self.eval_episodes if episodes is None else episodes
        return [self.eval_seed_base + i for i in range(n)]


def training_only_fields() -> list[str]:
    """AllocationConfig fields that a rule-based policy has no use for (refused, never ignored)."""
    own = {f.name for f in dataclasses.fields(HeuristicConfig)}
    return [f.name for f in dataclasses.fields(AllocationConfig) if f.name not in own]
