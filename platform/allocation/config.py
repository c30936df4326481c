"""``AllocationConfig``: the one typed config of ``platform.train group-robust-ppo|ppo``.

Built by :func:`base.config.build` from defaults < ``--config FILE.yaml`` <
``--set key=value`` < explicit flags; validated here, in ``__post_init__``, with errors
that name the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from base.errors import require

ALGORITHMS = ("group-robust-ppo", "ppo")
ROBUST_MODES = ("gap", "worst_group")
# Evaluation seeds must stay away from the seeds RLlib derives for training envs
# (seed + small worker/vector offsets).
EVAL_SEED_MARGIN = 10_000


def _doc(text: str, **kw: Any):
    return field(metadata={"help": text}, **kw)


@dataclass
class AllocationConfig:
    """Hospital-allocation training run (one MLflow run)."""

    algorithm: Literal["group-robust-ppo", "ppo"] = _doc(
        "group-robust-ppo (RLlib PPO + group-robust loss) or ppo (plain RLlib PPO)",
        default="group-robust-ppo")
    scenario: str = _doc(
        "hospital scenario: urban, rural, pediatric, surge (or a gym id like HospitalRural-v0)",
        default="rural")
    robust_lambda: float = _doc("λ in [0, 1]: weight of L_robust in (1-λ)·L_PPO + λ·L_robust",
                                default=0.3)
    robust_mode: Literal["gap", "worst_group"] = _doc(
        "gap: best-minus-worst group objective; worst_group: mean-minus-worst (GroupDRO style)",
        default="gap")
    fairgrad: bool = _doc(
        "FairGrad (arXiv 2504.14388): project the per-group policy-loss gradients against the "
        "task gradient (group-robust-ppo only)", default=False)
    group_key: str = _doc(
        "patient attribute (or intersection, e.g. age_group+sex) that defines the groups",
        default="age_group")
    env_config: dict[str, Any] = _doc(
        "extra keyword arguments for the simulator (envs.hospital.make_env)",
        default_factory=dict)
    seed: int = _doc("training seed (torch, numpy, env runners)", default=0)
    iterations: int = _doc("training iterations (total; --resume continues up to it)", default=20)
    num_env_runners: int = _doc("remote env-runner actors (0: sample in the driver)", default=1)
    num_envs_per_env_runner: int = _doc("vectorised envs per env runner", default=1)
    train_batch_size: int = _doc("env steps per training iteration", default=1000)
    minibatch_size: int = _doc("SGD minibatch size (<= train_batch_size)", default=128)
    num_epochs: int = _doc("SGD passes over each train batch", default=5)
    lr: float = _doc("Adam learning rate", default=3e-4)
    gamma: float = _doc("discount factor in (0, 1]", default=0.99)
    gae_lambda: float = _doc("GAE λ in [0, 1]", default=0.95)
    clip_param: float = _doc("PPO clip ε > 0", default=0.2)
    entropy_coeff: float = _doc("entropy bonus coefficient >= 0", default=0.0)
    hidden_sizes: list[int] = _doc("policy/value MLP hidden sizes",
                                   default_factory=lambda: [64, 64])
    eval_episodes: int = _doc("greedy evaluation episodes after training (0: skip)", default=5)
    eval_seed_base: int = _doc(
        f"evaluation episode i uses seed eval_seed_base + i (>= seed + {EVAL_SEED_MARGIN})",
        default=1_000_000)
    checkpoint_every: int = _doc("checkpoint every N iterations (0: only at the end)", default=5)
    checkpoint_dir: str | None = _doc(
        "where checkpoints go (default <storage>/allocation/<run_name>)", default=None)
    run_name: str | None = _doc(
        "MLflow run name; --resume picks the latest run with this name "
        "(default <algorithm>-<scenario>-l<λ>-s<seed>)", default=None)

    def __post_init__(self) -> None:
        require(self.algorithm in ALGORITHMS, "algorithm",
                f"got {self.algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
        require(isinstance(self.scenario, str) and bool(self.scenario), "scenario",
                "must be a non-empty scenario name")
        from platform.allocation import scenarios

        known = scenarios.names()
        if known:  # empty only when envs.hospital is not installed (unit tests)
            require(self.scenario in known, "scenario",
                    f"got {self.scenario!r}; allowed: {', '.join(known)}")
        require(0.0 <= self.robust_lambda <= 1.0, "robust_lambda",
                f"got {self.robust_lambda}; allowed: a number in [0, 1]")
        require(self.robust_mode in ROBUST_MODES, "robust_mode",
                f"got {self.robust_mode!r}; allowed: {', '.join(ROBUST_MODES)}")
        require(not (self.fairgrad and self.algorithm == "ppo"), "fairgrad",
                "is an option of group-robust-ppo; allowed with ppo: false")
        require(bool(self.group_key), "group_key", "must name an attribute, e.g. age_group")
        require(self.iterations > 0, "iterations", f"got {self.iterations}; must be >= 1")
        require(self.num_env_runners >= 0, "num_env_runners",
                f"got {self.num_env_runners}; must be >= 0")
        require(self.num_envs_per_env_runner >= 1, "num_envs_per_env_runner",
                f"got {self.num_envs_per_env_runner}; must be >= 1")
        require(self.train_batch_size >= 1, "train_batch_size",
                f"got {self.train_batch_size}; must be >= 1")
        require(1 <= self.minibatch_size <= self.train_batch_size, "minibatch_size",
                f"got {self.minibatch_size}; allowed: 1..train_batch_size ({self.train_batch_size})")
        require(self.num_epochs >= 1, "num_epochs", f"got {self.num_epochs}; must be >= 1")
        require(self.lr > 0, "lr", f"got {self.lr}; must be > 0")
        require(0.0 < self.gamma <= 1.0, "gamma", f"got {self.gamma}; allowed: (0, 1]")
        require(0.0 <= self.gae_lambda <= 1.0, "gae_lambda",
                f"got {self.gae_lambda}; allowed: [0, 1]")
        require(self.clip_param > 0, "clip_param", f"got {self.clip_param}; must be > 0")
        require(self.entropy_coeff >= 0, "entropy_coeff", f"got {self.entropy_coeff}; must be >= 0")
        require(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
                "hidden_sizes", f"got {self.hidden_sizes}; need >= 1 positive sizes")
        require(self.eval_episodes >= 0, "eval_episodes", f"got {self.eval_episodes}; must be >= 0")
        require(self.eval_seed_base >= self.seed + EVAL_SEED_MARGIN, "eval_seed_base",
                f"got {self.eval_seed_base}; must be >= seed + {EVAL_SEED_MARGIN} "
                f"({self.seed + EVAL_SEED_MARGIN}) so evaluation seeds differ from training seeds")
        require(self.checkpoint_every >= 0, "checkpoint_every",
                f"got {self.checkpoint_every}; must be >= 0")

    @property
    def name(self) -> str:
        """Run name: explicit ``run_name`` or ``<algorithm>-<scenario>-l<λ>-<mode>-s<seed>``."""
        if self.run_name:
            return self.run_name
        lam = f"-l{self.robust_lambda:g}-{self.robust_mode}" if self.algorithm != "ppo" else ""
        return f"{self.algorithm}-{self.scenario}{lam}-s{self.seed}"

    def env_creator_config(self) -> dict[str, Any]:
        """Keyword arguments of the simulator: ``group_key`` plus ``env_config``."""
        return {"group_key": self.group_key, **self.env_config}

    def eval_seeds(self, episodes: int | None = None) -> list[int]:
        n = self.eval_episodes if episodes is None else episodes
        return [self.eval_seed_base + i for i in range(n)]

    def replace(self, **changes: Any) -> AllocationConfig:
        return dataclasses.replace(self, **changes)
