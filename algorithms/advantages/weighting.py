"""Fairness weightings that compose with any base estimator.

A *weighting* rescales a base estimator's advantages by group: FairGRPO's representation x
difficulty x data-source factor (``fairgrpo``, ``fairgrpo_nd``: fair.py) or GroupDRO's group
weights (``group_dro``: dro.py). :class:`Weighted` is the estimator "base, then weighting"::

    est = make_estimator("rloo", fairness="fairgrpo", factor_max=1e6)   # kwargs of both
    res = est(rewards, prompt_index, meta, est.init_state(), lengths=None)

The base runs first on the batch (it is stateless: ``grpo``, ``dr_grpo``, ``rloo``,
``reinforce_pp``), then ``weighting.apply(batch, base_advantages, state)``; the state is the
weighting's (FairGRPO's history, GroupDRO's log q). The registered presets ``fair_grpo``,
``fair_grpo_nd`` and ``group_dro`` are ``grpo`` under these weightings (same numbers as
``make_estimator("grpo", fairness=...)``, tested).

With every group equal, FairGRPO's factor is one constant c, so the output is the base's
advantages divided by c and then by the batch std: the base's advantages up to the batch scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from algorithms.advantages.core import (
    ESTIMATORS,
    AdvantageResult,
    BaseConfig,
    Batch,
    Estimator,
    NullState,
)
from base.config import build
from base.errors import ConfigError
from base.registry import Registry

WEIGHTINGS: Registry = Registry("fairness weighting")


class Weighting:
    """Base: ``apply(batch, base_advantages (n,), state) -> AdvantageResult``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def init_state(self) -> Any:
        return NullState()

    def apply(self, b: Batch, base: np.ndarray, state: Any) -> AdvantageResult:  # pragma: no cover
        raise NotImplementedError


def register_weighting(name: str):
    """Class decorator: register a Weighting subclass under ``name``."""

    def _wrap(cls):
        cls.name = name
        WEIGHTINGS.register(name, cls, help=(cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return _wrap


class Weighted(Estimator):
    """A stateless base estimator's advantages, then a group weighting (state = the weighting's)."""

    def __init__(self, base: Estimator, weighting: Weighting, config: Any = None):
        self.base, self.weighting = base, weighting
        self.config = config if config is not None else base.config  # group_size, eps
        if not self.name:
            self.name = f"{base.name}+{weighting.name}"

    def init_state(self) -> Any:
        return self.weighting.init_state()

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        base = self.base.compute(b, NullState())
        res = self.weighting.apply(b, base.advantages, state)
        res.diagnostics = {**base.diagnostics, **res.diagnostics}
        return res

    def __repr__(self) -> str:
        return f"Weighted({self.base!r}, {type(self.weighting).__name__}({self.weighting.config}))"


def preset(name: str, base: str, weighting: str):
    """Register ``name`` as ``base`` under ``weighting``; its Config is the weighting's (which
    carries the shared ``eps`` and ``group_size`` the base is built with)."""

    def _wrap(cls):
        wcls = WEIGHTINGS.get(weighting)
        cls.Config = wcls.Config

        def __init__(self, config: Any = None):
            config = config if config is not None else self.Config()
            base_cls = ESTIMATORS.get(base)
            shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(BaseConfig)}
            Weighted.__init__(self, base_cls(base_cls.Config(**shared)), wcls(config), config)

        cls.__init__ = __init__
        cls.name = name
        ESTIMATORS.register(name, cls, help=(cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return _wrap


def base_estimators() -> list[str]:
    """Registered estimators a weighting can compose with (the stateless ones)."""
    return [n for n in ESTIMATORS.names() if not issubclass(ESTIMATORS.get(n), Weighted)]


def make_estimator(name: str, fairness: str | None = None, **kwargs: Any) -> Estimator:
    """Estimator ``name``, under the fairness weighting ``fairness`` when given.

    ``kwargs`` may hold fields of the estimator's config and of the weighting's; ``eps`` and
    ``group_size`` go to both. Errors: unknown name -> RegistryError listing the names; a
    preset (``fair_grpo``, ...) under another weighting, or an unknown field -> ConfigError
    naming the field and the allowed values.
    """
    from algorithms.advantages.core import get_estimator

    if not fairness or fairness == "none":
        return get_estimator(name, **kwargs)
    wcls = WEIGHTINGS.get(fairness)
    bcls = ESTIMATORS.get(name)
    bases = base_estimators()
    if name not in bases:
        raise ConfigError("estimator", f"{name!r} already weights by group; with fairness "
                          f"{fairness!r} choose one of: {', '.join(bases)}")
    bfields = {f.name for f in dataclasses.fields(bcls.Config)}
    wfields = {f.name for f in dataclasses.fields(wcls.Config)}
    unknown = sorted(set(kwargs) - bfields - wfields)
    if unknown:
        raise ConfigError(unknown[0], f"unknown field for {name} + {fairness}; allowed: "
                          f"{', '.join(sorted(bfields | wfields))}")
    base = bcls(build(bcls.Config, {k: v for k, v in kwargs.items() if k in bfields}))
    weighting = wcls(build(wcls.Config, {k: v for k, v in kwargs.items() if k in wfields}))
    return Weighted(base, weighting)
