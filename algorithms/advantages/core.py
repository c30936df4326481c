"""Shared types, input checks, the estimator registry and the stateless estimators.

Shapes used throughout: ``n`` completions, ``P`` prompts.

* ``rewards``       float array (n,)
* ``prompt_index``  int array (n,), values in [0, P)
* ``meta``          :class:`PromptMeta`, every field of length P
* ``lengths``       optional float array (n,): completion lengths in tokens (REINFORCE++'s
                    token whitening weights each completion by its length; None = all 1)
* result            :class:`AdvantageResult` with ``advantages`` float64 (n,)

Conventions shared by all estimators (documented once here):

* Per-prompt std uses ``ddof=1`` (``torch.std``'s default, as in verl).
* A prompt with a single completion has no group-relative signal: its advantage is 0 (verl
  instead substitutes mean 0 / std 1, i.e. advantage = raw reward).
* Every output is finite: zero variances fall back to a divisor of 1 (after ``+ eps``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from base.config import build
from base.errors import UsageError, require
from base.registry import Registry

UNKNOWN = "unknown"


class AdvantageInputError(UsageError):
    """Bad arrays passed to an estimator (lengths, ranges, NaN); names the argument."""


def is_unknown(group: Any) -> bool:
    """``None``, ``""``, ``"unknown"`` (any case) and float NaN all mean "group unknown"."""
    if group is None:
        return True
    if isinstance(group, float) and math.isnan(group):
        return True
    return isinstance(group, str) and group.strip().lower() in ("", UNKNOWN)


@dataclass
class PromptMeta:
    """Per-prompt metadata, every sequence of length P (number of prompts).

    data_source: dataset name per prompt (FairGRPO's "d").
    group:       demographic group key per prompt (e.g. ``"F|26-50"``); None/"unknown" = unknown.
    prompt_id:   stable id per prompt (unique prompts are counted by it across epochs).
    true_group:  optional masked ground truth for unknown prompts (only for ARI/NMI diagnostics).
    features:    optional float array (P, d) to cluster on instead of rollout rewards.
    """

    data_source: Sequence[str]
    group: Sequence[str | None]
    prompt_id: Sequence[str]
    true_group: Sequence[str | None] | None = None
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data_source)

    def validate(self) -> None:
        n = len(self.data_source)
        for name in ("group", "prompt_id", "true_group"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise AdvantageInputError(
                    f"meta.{name}: length {len(value)} != len(meta.data_source) {n}")
        if self.features is not None:
            f = np.asarray(self.features)
            if f.ndim != 2 or f.shape[0] != n:
                raise AdvantageInputError(
                    f"meta.features: expected shape ({n}, d), got {tuple(f.shape)}")
            if not np.isfinite(f.astype(float)).all():
                raise AdvantageInputError("meta.features: contains NaN or inf")


@dataclass
class AdvantageResult:
    """``advantages`` float64 (n,); ``diagnostics`` flat name -> float (MLflow-ready);
    ``prompt_group`` optional per-prompt key (P,) the estimator actually used (e.g. clusters)."""

    advantages: np.ndarray
    diagnostics: dict[str, float] = field(default_factory=dict)
    prompt_group: list[str] | None = None


class NullState:
    """State of a stateless estimator: an empty dict round-trips."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        if d:
            raise AdvantageInputError(f"stateless estimator got a non-empty state: {sorted(d)}")


@dataclass
class Batch:
    """Validated inputs plus the per-prompt statistics every estimator needs."""

    rewards: np.ndarray          # (n,) float64
    prompt_index: np.ndarray     # (n,) int64
    meta: PromptMeta
    count: np.ndarray            # (P,) completions per prompt
    mean: np.ndarray             # (P,) mean reward per prompt (0 where count == 0)
    std: np.ndarray              # (P,) ddof=1 std per prompt (0 where count < 2)
    lengths: np.ndarray | None = None  # (n,) completion lengths in tokens, or None

    @property
    def n_prompts(self) -> int:
        return len(self.count)

    @property
    def present(self) -> np.ndarray:
        """(P,) bool: prompts with at least one completion in this batch."""
        return self.count > 0


def prepare(rewards: Any, prompt_index: Any, meta: PromptMeta, lengths: Any = None) -> Batch:
    """Check shapes/ranges (errors name the argument) and compute per-prompt mean and std."""
    if not isinstance(meta, PromptMeta):
        raise AdvantageInputError(f"meta: expected PromptMeta, got {type(meta).__name__}")
    meta.validate()
    r = np.asarray(rewards, dtype=np.float64)
    idx = np.asarray(prompt_index)
    if r.ndim != 1:
        raise AdvantageInputError(f"rewards: expected shape (n_completions,), got {r.shape}")
    if idx.shape != r.shape:
        raise AdvantageInputError(
            f"prompt_index: shape {idx.shape} != rewards shape {r.shape} (one index per completion)")
    if idx.size and not np.issubdtype(idx.dtype, np.integer) and not (
            np.issubdtype(idx.dtype, np.floating) and np.all(np.mod(idx, 1) == 0)):
        raise AdvantageInputError("prompt_index: expected integers")
    idx = idx.astype(np.int64)
    P = len(meta)
    if idx.size and (idx.min() < 0 or idx.max() >= P):
        raise AdvantageInputError(
            f"prompt_index: values must be in [0, {P}) (n_prompts = len(meta.data_source)), "
            f"got range [{idx.min()}, {idx.max()}]")
    if not np.isfinite(r).all():
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise AdvantageInputError(f"rewards: non-finite value {r[bad]} at index {bad}")
    count = np.bincount(idx, minlength=P).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean = np.bincount(idx, weights=r, minlength=P) / safe
    dev = r - mean[idx]
    ss = np.bincount(idx, weights=dev * dev, minlength=P)
    std = np.sqrt(np.where(count > 1, ss / np.maximum(count - 1.0, 1.0), 0.0))
    lens = None
    if lengths is not None:
        lens = np.asarray(lengths, dtype=np.float64)
        if lens.shape != r.shape:
            raise AdvantageInputError(
                f"lengths: shape {lens.shape} != rewards shape {r.shape} (one length per completion)")
        if lens.size and not (np.isfinite(lens).all() and lens.min() >= 0):
            raise AdvantageInputError("lengths: completion lengths must be finite and >= 0")
    return Batch(r, idx, meta, count, mean, std, lens)


def codes(keys: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Unique keys (first-seen order) and the (len(keys),) int code of each."""
    codes, uniques = pd.factorize(keys, sort=False)
    return [str(u) for u in uniques], codes.astype(np.int64)


def as_str_array(values: Any) -> np.ndarray:
    """(P,) object array of str (ids, source names)."""
    arr = np.asarray(values, dtype=object)
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    return np.array([str(u) for u in uniques] or [""], dtype=object)[codes]


def normalise_groups(groups: Any) -> np.ndarray:
    """(P,) object array of group keys with every unknown spelling mapped to ``"unknown"``."""
    codes, uniques = pd.factorize(np.asarray(groups, dtype=object), use_na_sentinel=True)
    names = [UNKNOWN if is_unknown(u) else str(u) for u in uniques] + [UNKNOWN]
    return np.array(names, dtype=object)[codes]


def grpo_scores(b: Batch, eps: float, scale_by_std: bool = True) -> np.ndarray:
    """(n,) GRPO score (r_i - mean_q) / (std_q + eps); 0 for single-completion prompts."""
    centred = b.rewards - b.mean[b.prompt_index]
    if scale_by_std:
        centred = centred / (b.std[b.prompt_index] + eps)
    return np.where(b.count[b.prompt_index] > 1, centred, 0.0)


def safe_std(x: np.ndarray) -> float:
    """Sample std (ddof=1) of ``x``; 0.0 for fewer than 2 values."""
    return float(np.std(x, ddof=1)) if x.size > 1 else 0.0


def summary(adv: np.ndarray) -> dict[str, float]:
    if adv.size == 0:
        return {"adv/mean": 0.0, "adv/std": 0.0, "adv/abs_max": 0.0}
    return {"adv/mean": float(adv.mean()), "adv/std": float(adv.std()),
            "adv/abs_max": float(np.abs(adv).max())}


# ---------------------------------------------------------------------------------------------
# Registry and base class

ESTIMATORS: Registry = Registry("advantage estimator")


@dataclass
class BaseConfig:
    eps: float = 1e-6
    """added to standard deviations (and the floor of FairGRPO factors); must be > 0"""
    group_size: int | None = None
    """completions per prompt; when set, every prompt in a batch must have exactly this many"""

    def __post_init__(self):
        require(self.eps > 0 and math.isfinite(self.eps), "eps", f"must be > 0, got {self.eps}")
        require(self.group_size is None or self.group_size >= 2, "group_size",
                f"({self.group_size}) must be >= 2 for group-relative advantages")


class Estimator:
    """Base: ``est(rewards, prompt_index, meta, state) -> AdvantageResult``.

    Subclasses set ``Config`` (a dataclass) and implement ``compute(batch, state)``; stateful
    ones override ``init_state``. ``state`` is updated in place.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def init_state(self) -> Any:
        return NullState()

    def compute(self, b: Batch, state: Any) -> AdvantageResult:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, rewards: Any, prompt_index: Any, meta: PromptMeta,
                 state: Any = None, lengths: Any = None) -> AdvantageResult:
        """Advantages (n,) of ``rewards`` (n,); ``lengths`` (n,) completion token counts or None."""
        b = prepare(rewards, prompt_index, meta, lengths)
        gs = self.config.group_size
        if gs is not None:
            sizes = b.count[b.present]
            if sizes.size and not np.all(sizes == gs):
                bad = int(np.flatnonzero(b.present)[np.flatnonzero(sizes != gs)[0]])
                raise AdvantageInputError(
                    f"prompt_index: prompt {bad} has {int(b.count[bad])} completions, "
                    f"config group_size is {gs}")
        if state is None:
            state = self.init_state()
        res = self.compute(b, state)
        res.advantages = np.asarray(res.advantages, dtype=np.float64)
        assert res.advantages.shape == b.rewards.shape
        res.diagnostics.update(summary(res.advantages))
        return res

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def register(name: str):
    """Class decorator: register an Estimator subclass under ``name``."""

    def _wrap(cls):
        cls.name = name
        ESTIMATORS.register(name, cls, help=(cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return _wrap


def get_estimator(name: str, **kwargs: Any) -> Estimator:
    """Build estimator ``name`` with config fields ``kwargs``.

    Unknown name -> RegistryError listing the names; bad field -> ConfigError naming it.
    """
    cls = ESTIMATORS.get(name)
    return cls(build(cls.Config, kwargs))


def config_fields(name: str) -> dict[str, Any]:
    """Field -> default for estimator ``name`` (for CLI help and docs)."""
    cls = ESTIMATORS.get(name)
    return {f.name: f.default for f in dataclasses.fields(cls.Config)}


# ---------------------------------------------------------------------------------------------
# Stateless estimators


@dataclass
class GRPOConfig(BaseConfig):
    scale_by_std: bool = True
    """divide by the per-prompt std (False = Dr. GRPO's mean-centring only; see ``dr_grpo``)"""


@register("grpo")
class GRPO(Estimator):
    """GRPO: (r_i - mean_q) / (std_q + eps) per prompt q (DeepSeekMath, arXiv 2402.03300).

    Same as verl ``core_algos.compute_grpo_outcome_advantage`` (torch.std, ddof=1), except that
    a prompt with one completion gets 0 here (verl: mean 0, std 1, i.e. the raw reward).
    """

    Config = GRPOConfig

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        return AdvantageResult(grpo_scores(b, self.config.eps, self.config.scale_by_std))


@register("dr_grpo")
class DrGRPO(Estimator):
    """Dr. GRPO: r_i - mean_q, no std normalisation (Liu et al., arXiv 2503.20783).

    verl ``compute_grpo_outcome_advantage(norm_adv_by_std_in_grpo=False)`` and TRL
    ``GRPOTrainer`` with ``scale_rewards="none"``. The paper's other half, no length
    normalisation, is the learner's loss aggregation ``seq-mean-token-sum-norm`` (TRL
    ``loss_type="dr_grpo"``), which the ``dr-grpo`` algorithm selects.
    """

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        return AdvantageResult(grpo_scores(b, self.config.eps, scale_by_std=False))


@register("rloo")
class RLOO(Estimator):
    """RLOO: r_i minus the mean of the other completions of the same prompt (arXiv 2402.14740).

    A_i = r_i - (sum_q - r_i)/(n_q - 1) = n_q/(n_q - 1) * (r_i - mean_q); 0 when n_q == 1
    (verl ``compute_rloo_outcome_advantage``; it leaves a single completion's raw reward).
    """

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        n = b.count[b.prompt_index]
        scale = np.where(n > 1, n / np.maximum(n - 1.0, 1.0), 0.0)
        return AdvantageResult(scale * (b.rewards - b.mean[b.prompt_index]))


WHITEN_EPS = 1e-8  # verl torch_functional.masked_whiten: (x - mean) * rsqrt(var + 1e-8)


def token_whiten(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """verl ``torch_functional.masked_whiten`` of a per-token tensor whose every token of
    completion i holds x_i, with ``weights`` (n,) the token counts: W = sum w,
    mean = sum w x / W, var = sum w (x - mean)^2 / W * W / (W - 1) (Bessel over tokens),
    out = (x - mean) / sqrt(var + 1e-8). (n,) -> (n,); zeros when W <= 1 (verl raises).

    verl's ``masked_mean`` divides by W + 1e-8: a relative difference of 1e-8 / W, except that
    all-equal rewards give exact zeros here (verl: about 6e-6 for 12 tokens of reward 0.7).
    """
    W = float(weights.sum())
    if W <= 1.0:
        return np.zeros_like(x)
    mean = float((weights * x).sum()) / W
    var = float((weights * (x - mean) ** 2).sum()) / (W - 1.0)
    return (x - mean) / math.sqrt(var + WHITEN_EPS)


@dataclass
class ReinforcePPConfig(BaseConfig):
    baseline: Literal["none", "group_mean"] = "none"
    """"none": whiten raw returns over the batch (REINFORCE++); "group_mean": subtract the
    prompt mean first (verl's reinforce_plus_plus_baseline)"""
    whiten: Literal["tokens", "sequences"] = "tokens"
    """"tokens": over every completion token, i.e. each completion weighted by its length
    (verl's masked_whiten; the reference); "sequences": one value per completion,
    (x - mean)/(std + eps) (this project's earlier choice)"""

    def __post_init__(self):
        super().__post_init__()
        require(self.baseline in ("none", "group_mean"), "baseline",
                f"got {self.baseline!r}; allowed: 'none', 'group_mean'")
        require(self.whiten in ("tokens", "sequences"), "whiten",
                f"got {self.whiten!r}; allowed: 'tokens', 'sequences'")


@register("reinforce_pp")
class ReinforcePP(Estimator):
    """REINFORCE++: global batch normalisation of outcome returns (arXiv 2501.03262).

    x = r (``baseline="none"``, verl ``compute_reinforce_plus_plus_outcome_advantage`` with
    gamma = 1: every token's return is the sequence reward) or x = r - mean_q
    (``"group_mean"``, verl ``compute_reinforce_plus_plus_baseline_outcome_advantage``).
    ``whiten="tokens"`` (default) is verl's ``masked_whiten`` over all valid tokens
    (:func:`token_whiten`, weights = ``lengths``; without lengths every completion counts as
    one token); ``"sequences"`` whitens over completions, (x - mean)/(std + eps).
    """

    Config = ReinforcePPConfig

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        x = b.rewards
        if self.config.baseline == "group_mean":
            x = x - b.mean[b.prompt_index]
        if x.size == 0:
            return AdvantageResult(x.copy())
        if self.config.whiten == "tokens":
            w = b.lengths if b.lengths is not None else np.ones_like(x)
            return AdvantageResult(token_whiten(x, w))
        return AdvantageResult((x - x.mean()) / (safe_std(x) + self.config.eps))
