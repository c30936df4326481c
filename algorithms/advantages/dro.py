"""GroupDRO weights on any base estimator's advantages (GRPO + GroupDRO: the ``group_dro`` preset).

GroupDRO (Sagawa et al., "Distributionally Robust Neural Networks", arXiv 1911.08731,
Algorithm 1) keeps a weight q_g per group, updated by exponentiated gradient ascent on the
group loss, q_g <- q_g * exp(eta * loss_g), renormalised, and minimises sum_g q_g * L_g with
L_g the *mean* loss of group g. Here a group is (data source, demographic group) ("unknown" is
a group), loss_g = 1 - mean reward of g's completions in the batch (rewards are accuracies in
[0, 1]; only groups in the batch are updated). With n completions, n_g of them in g, and the
groups G_b present in the batch, the advantage of each completion of g is multiplied by

    ``weighting="group_mean"`` (Sagawa's objective):  w_g = n * q_g / (n_g * sum_{h in G_b} q_h)
    ``weighting="per_example"`` (earlier here):       w_g = |G_b| * q_g / sum_{h in G_b} q_h

Under ``group_mean`` group g carries exactly q_g / sum q of the batch's total weight (mean
weight per completion 1); ``per_example`` weights each completion by q_g, so a group's share
also grows with its size: with q_hard / q_easy = 4.69 and the hard group 25 % of the batch,
its share is 82 % under ``group_mean`` and 61 % under ``per_example`` (tested).

State: log q_g per group key (bounded by the number of groups), a plain dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from algorithms.advantages.core import (
    AdvantageInputError,
    AdvantageResult,
    BaseConfig,
    Batch,
    as_str_array,
    codes,
    normalise_groups,
)
from algorithms.advantages.weighting import Weighted, Weighting, preset, register_weighting
from base.errors import require


class DROState:
    """log group weights: key "source|group" -> log q (unnormalised)."""

    def __init__(self) -> None:
        self.log_q: dict[str, float] = {}

    def state_dict(self) -> dict:
        return {"log_q": dict(self.log_q)}

    def load_state_dict(self, d: dict) -> None:
        if "log_q" not in d:
            raise AdvantageInputError("state: expected a dict with key 'log_q'")
        self.log_q = {str(k): float(v) for k, v in d["log_q"].items()}


@dataclass
class GroupDROConfig(BaseConfig):
    eta: float = 0.1
    """step size of the exponentiated-gradient update of the group weights"""
    max_log_weight: float = 20.0
    """log-weights are kept within +-this of their max (no overflow, no group fully silenced)"""
    weighting: Literal["group_mean", "per_example"] = "group_mean"
    """q_g / n_g per completion, i.e. q-weighted group-mean losses (Sagawa et al.) | q_g per
    completion (a group's weight also grows with its size; this project's earlier choice)"""

    def __post_init__(self):
        super().__post_init__()
        require(self.eta >= 0 and math.isfinite(self.eta), "eta", f"must be >= 0, got {self.eta}")
        require(self.max_log_weight > 0, "max_log_weight",
                f"must be > 0, got {self.max_log_weight}")
        require(self.weighting in ("group_mean", "per_example"), "weighting",
                f"got {self.weighting!r}; allowed: 'group_mean', 'per_example'")


@register_weighting("group_dro")
class GroupDROWeighting(Weighting):
    """GroupDRO: exponentiated group weights (step eta) on the base advantages (arXiv 1911.08731)."""

    Config = GroupDROConfig

    def init_state(self) -> DROState:
        return DROState()

    def apply(self, b: Batch, s: np.ndarray, state: Any) -> AdvantageResult:
        if not isinstance(state, DROState):
            raise AdvantageInputError(
                f"state: group_dro needs the object from init_state(), got {type(state).__name__}")
        cfg = self.config
        keys = as_str_array(b.meta.data_source) + "|" + normalise_groups(b.meta.group)
        names, code = codes(keys)
        comp_code = code[b.prompt_index] if b.rewards.size else np.zeros(0, dtype=np.int64)
        G = len(names)
        n_g = np.bincount(comp_code, minlength=G)
        r_g = np.bincount(comp_code, weights=b.rewards, minlength=G) / np.maximum(n_g, 1)
        for j in np.flatnonzero(n_g):
            k = names[j]
            state.log_q[k] = float(state.log_q.get(k, 0.0) + cfg.eta * (1.0 - r_g[j]))
        if state.log_q:
            top = max(state.log_q.values())
            for k, v in state.log_q.items():
                state.log_q[k] = float(max(v - top, -cfg.max_log_weight))
        present = np.flatnonzero(n_g)
        w = np.ones(G)
        if present.size:
            lq = np.array([state.log_q[names[j]] for j in present])
            q = np.exp(lq - lq.max())
            q = q / q.sum()
            if cfg.weighting == "group_mean":
                w[present] = b.rewards.size * q / n_g[present]
            else:
                w[present] = len(present) * q
        diag = {f"dro_weight/{names[j]}": float(w[j]) for j in present}
        return AdvantageResult(s * w[comp_code], diag)


@preset("group_dro", base="grpo", weighting="group_dro")
class GroupDRO(Weighted):
    """GRPO + GroupDRO: exponentiated group weights (step eta) on GRPO advantages."""
