"""FairGRPO and FairGRPO without demographic labels (Dai et al., arXiv 2510.19893).

Per prompt q, the GRPO score s_i = (r_i - mean_q)/(std_q + eps). Running history per data
source d and per (d, demographic group g) holds N (unique prompts seen) and mu (mean of the
prompts' mean rewards). With T = max(sqrt(N) * mu, eps):

    a_i = s_i / clip(T_d * T_g, eps, factor_max),   then   a <- a / (std(a) + eps)

so rare groups (small N) and hard groups (small mu) get larger advantages.

Differences from the reference code (a verl fork), on purpose:

1. The factor is clamped to [eps, factor_max] (default 1e6) and T is floored at eps. The
   reference leaves a group whose mean reward is 0 unscaled (factor 1), which makes the
   hardest groups *smaller* than slightly-less-hard ones; here they get the largest factor.
2. N counts unique prompts (by ``prompt_id``), not visits: the reference re-appends a prompt
   every epoch, so N grows with training length instead of the group's size. A revisited
   prompt's contribution to mu is replaced by its latest mean reward. The history keeps one
   float per unique prompt plus running (count, sum) per key, so memory is bounded by the
   dataset size, not the run length; it serialises to plain dicts (``state_dict``).

History is updated with the batch *before* factors are computed, so every group in the batch
has N >= 1. ``fair_grpo`` treats an unknown group as one more group ("unknown");
``fair_grpo_nd`` splits unknown prompts by k-means (see ``discovery``) and gives each cluster c
N_c = N_unknown(d) * (share of d's unknown prompts in this batch that fall in c) and mu_c =
the cluster's mean prompt reward in this batch (clusters are refit every step, so their
identities carry no history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from algorithms.advantages.core import (
    UNKNOWN,
    AdvantageInputError,
    AdvantageResult,
    BaseConfig,
    Batch,
    Estimator,
    as_str_array,
    grpo_scores,
    is_unknown,
    normalise_groups,
    register,
    safe_std,
)
from algorithms.advantages.core import (
    codes as _codes,
)
from algorithms.advantages.discovery import agreement, elbow_kmeans, reward_matrix
from base.errors import require

STATE_VERSION = 2


class FairHistory:
    """Per-prompt latest mean reward for every unique prompt, as columns, and (N, mu) per data
    source and per (source, group) recomputed from them with ``np.bincount`` after each update
    (exact, no drift from running sums; memory: one float + two ints per unique prompt).

    ``state_dict()`` -> ``{"version", "prompts": {prompt_id: [source, group, mean]}}`` (plain
    JSON); loading restores the same row order, so later steps are bit-identical.
    """

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._src = np.zeros(0, np.int64)
        self._pair = np.zeros(0, np.int64)
        self._mean = np.zeros(0, np.float64)
        self._src_names: list[str] = []
        self._src_code: dict[str, int] = {}
        self._pair_names: list[tuple[str, str]] = []
        self._pair_code: dict[str, int] = {}
        self._stats: tuple[np.ndarray, ...] | None = None

    @staticmethod
    def _codes_for(keys: np.ndarray, table: dict, order: list, name_of=lambda k: k
                   ) -> np.ndarray:
        """Global int code per key (new keys appended to ``table``/``order``)."""
        codes, uniq = pd.factorize(keys, sort=False)
        glob = np.empty(len(uniq), np.int64)
        for i, u in enumerate(uniq):
            j = table.get(u)
            if j is None:
                j = table[u] = len(order)
                order.append(name_of(u))
            glob[i] = j
        return glob[codes]

    def update(self, prompt_ids: list[str], sources: np.ndarray, groups: np.ndarray,
               means: np.ndarray) -> None:
        """Record each prompt's latest mean reward (a revisit replaces, never double counts).

        prompt_ids: (m,) str; sources, groups: (m,) object arrays of str; means: (m,) float.
        """
        row = self._row
        got = list(map(row.get, prompt_ids))
        if None in got:  # first visits get the next free rows
            for i, pid in enumerate(prompt_ids):
                if got[i] is None:
                    got[i] = row.get(pid)
                    if got[i] is None:
                        got[i] = row[pid] = len(self._ids)
                        self._ids.append(pid)
        rows = np.array(got, dtype=np.int64)
        n = len(self._ids)
        if n > len(self._mean):
            cap = max(n, 2 * len(self._mean), 64)
            for name in ("_src", "_pair", "_mean"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[:len(old)] = old
                setattr(self, name, new)
        src = self._codes_for(np.asarray(sources, dtype=object), self._src_code,
                              self._src_names)
        pair = self._codes_for(np.asarray(sources, dtype=object) + "\x1f" + groups,
                               self._pair_code, self._pair_names,
                               lambda k: tuple(k.split("\x1f", 1)))
        self._src[rows] = src
        self._pair[rows] = pair
        self._mean[rows] = means
        self._stats = None

    def _aggregates(self) -> tuple[np.ndarray, ...]:
        if self._stats is None:
            n = len(self._ids)
            src, pair, mean = self._src[:n], self._pair[:n], self._mean[:n]
            self._stats = (np.bincount(src, minlength=len(self._src_names)),
                           np.bincount(src, weights=mean, minlength=len(self._src_names)),
                           np.bincount(pair, minlength=len(self._pair_names)),
                           np.bincount(pair, weights=mean, minlength=len(self._pair_names)))
        return self._stats

    def stats(self, d: str, g: str | None = None) -> tuple[int, float]:
        """(N unique prompts, mu = mean of their latest mean rewards) for source d, or for group
        g within d; (0, 0.0) if never seen."""
        sc, ss, pc, ps = self._aggregates()
        if g is None:
            j = self._src_code.get(d)
            cnt, tot = (sc, ss) if j is not None else (None, None)
        else:
            j = self._pair_code.get(f"{d}\x1f{g}")
            cnt, tot = (pc, ps) if j is not None else (None, None)
        if j is None or cnt[j] <= 0:
            return 0, 0.0
        return int(cnt[j]), float(tot[j] / cnt[j])

    def state_dict(self) -> dict:
        n = len(self._ids)
        src, pair, mean = self._src[:n].tolist(), self._pair[:n].tolist(), self._mean[:n].tolist()
        return {"version": STATE_VERSION,
                "prompts": {pid: [self._src_names[s], self._pair_names[p][1], m]
                            for pid, s, p, m in zip(self._ids, src, pair, mean, strict=True)}}

    def load_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise AdvantageInputError(
                f"state.version: expected {STATE_VERSION}, got "
                f"{d.get('version') if isinstance(d, dict) else d!r}")
        self.__init__()
        items = list(d["prompts"].items())
        if items:
            self.update([str(k) for k, _ in items],
                        np.array([v[0] for _, v in items], dtype=object),
                        np.array([v[1] for _, v in items], dtype=object),
                        np.array([float(v[2]) for _, v in items]))

    def __len__(self) -> int:
        return len(self._ids)


def scale_T(n: float, mu: float, eps: float) -> float:
    """T = max(sqrt(N) * mu, eps)."""
    return max(math.sqrt(max(n, 0.0)) * mu, eps)


@dataclass
class FairGRPOConfig(BaseConfig):
    factor_max: float = 1e6
    """upper clamp of T_d * T_g (the lower clamp is eps)"""
    batch_std_normalize: bool = True
    """divide the scaled batch by its std (the paper's final step)"""

    def __post_init__(self):
        super().__post_init__()
        require(self.factor_max > self.eps, "factor_max",
                f"({self.factor_max}) must be > eps ({self.eps})")


@dataclass
class FairGRPONDConfig(FairGRPOConfig):
    k_max: int = 3
    """largest number of latent groups per data source (k in {1, ..., k_max})"""
    elbow_threshold: float = 0.1
    """move to k+1 only while the inertia drop is >= this fraction of the previous inertia"""
    cluster_on: Literal["rewards", "features"] = "rewards"
    """cluster prompts on their rollout-reward vectors, or on ``meta.features`` (embeddings)"""
    random_state: int = 0
    """KMeans random_state (fixed so a step is reproducible)"""
    n_init: int | None = None
    """None: one Lloyd run from the best contiguous split (see discovery); int: k-means++ restarts"""

    def __post_init__(self):
        super().__post_init__()
        require(1 <= self.k_max <= 10, "k_max", f"must be in [1, 10], got {self.k_max}")
        require(0.0 <= self.elbow_threshold < 1.0, "elbow_threshold",
                f"must be in [0, 1), got {self.elbow_threshold}")
        require(self.cluster_on in ("rewards", "features"), "cluster_on",
                f"got {self.cluster_on!r}; allowed: 'rewards', 'features'")
        require(self.n_init is None or self.n_init >= 1, "n_init", f"must be >= 1, got {self.n_init}")


@register("fair_grpo")
class FairGRPO(Estimator):
    """FairGRPO: GRPO scores divided by T_d * T_g from running history (arXiv 2510.19893)."""

    Config = FairGRPOConfig

    def init_state(self) -> FairHistory:
        return FairHistory()

    def _discover(self, b: Batch, present: np.ndarray, sources: np.ndarray,
                  groups: np.ndarray, diag: dict) -> tuple[np.ndarray, dict]:
        """Latent groups for unknown prompts: (effective group per present prompt (object
        array), {(d, cluster key): (share of d's unknown prompts, mean prompt reward)})."""
        return groups, {}

    def compute(self, b: Batch, state: Any) -> AdvantageResult:
        if not isinstance(state, FairHistory):
            raise AdvantageInputError(
                f"state: {self.name} needs the object from init_state(), got {type(state).__name__}")
        cfg = self.config
        s = grpo_scores(b, cfg.eps)
        present = np.flatnonzero(b.present)
        diag: dict[str, float] = {}
        sources = as_str_array(b.meta.data_source)[present]
        groups = normalise_groups(b.meta.group)[present]
        eff, cluster_info = self._discover(b, present, sources, groups, diag)
        state.update(as_str_array(b.meta.prompt_id)[present].tolist(), sources, groups,
                     b.mean[present])

        src_keys, src_code = _codes(sources)
        pair_keys, pair_code = _codes(sources + "\x1f" + eff)
        t_d = np.array([scale_T(*state.stats(d), cfg.eps) for d in src_keys])
        t_g = np.empty(len(pair_keys))
        for j, key in enumerate(pair_keys):
            d, g = key.split("\x1f", 1)
            if (d, g) in cluster_info:
                share, mu = cluster_info[(d, g)]
                n = state.stats(d, UNKNOWN)[0] * share
            else:
                n, mu = state.stats(d, g)
            t_g[j] = scale_T(n, mu, cfg.eps)
        factor = np.ones(b.n_prompts)
        factor[present] = np.clip(t_d[src_code] * t_g[pair_code], cfg.eps, cfg.factor_max)
        a = s / factor[b.prompt_index]
        sd = safe_std(a)
        if cfg.batch_std_normalize and sd > 0:
            a = a / (sd + cfg.eps)
        if present.size:
            f = factor[present]
            diag.update({"factor/min": float(f.min()), "factor/max": float(f.max()),
                         "factor/mean": float(f.mean())})
        diag["n_groups"] = float(len(pair_keys))
        diag["history/prompts"] = float(len(state))
        for d, t in zip(src_keys, t_d, strict=True):
            diag[f"T_d/{d}"] = float(t)
        prompt_group = np.full(b.n_prompts, UNKNOWN, dtype=object)
        prompt_group[present] = sources + "|" + eff
        return AdvantageResult(a, diag, prompt_group=prompt_group.tolist())


@register("fair_grpo_nd")
class FairGRPOND(FairGRPO):
    """FairGRPO without labels: unknown groups found per data source by k-means + elbow."""

    Config = FairGRPONDConfig

    def _discover(self, b, present, sources, groups, diag):
        cfg = self.config
        unknown = groups == UNKNOWN
        diag["unknown_fraction"] = float(unknown.mean()) if unknown.size else 0.0
        if not unknown.any():
            return groups, {}
        if cfg.cluster_on == "features" and b.meta.features is None:
            raise AdvantageInputError(
                "meta.features: required when cluster_on='features' (shape (n_prompts, d))")
        eff = groups.copy()
        info: dict[tuple[str, str], tuple[float, float]] = {}
        truth = b.meta.true_group
        ari_sum = nmi_sum = 0.0
        n_scored = 0
        if cfg.cluster_on == "features":
            feats = np.asarray(b.meta.features, dtype=np.float64)
        else:
            feats = reward_matrix(b.rewards, b.prompt_index, b.count)
        for d in dict.fromkeys(sources[unknown].tolist()):
            local = np.flatnonzero(unknown & (sources == d))   # positions within ``present``
            prompts = present[local]
            cl = elbow_kmeans(feats[prompts], cfg.k_max, cfg.elbow_threshold, cfg.random_state, cfg.n_init)
            diag[f"k/{d}"] = float(cl.k)
            names = np.array([f"{UNKNOWN}/cluster{c}" for c in range(cl.k)], dtype=object)
            eff[local] = names[cl.labels]
            sizes = np.bincount(cl.labels, minlength=cl.k)
            sums = np.bincount(cl.labels, weights=b.mean[prompts], minlength=cl.k)
            for c in range(cl.k):
                info[(d, str(names[c]))] = (sizes[c] / len(local), sums[c] / sizes[c])
            if truth is not None:
                true = [truth[p] for p in prompts]
                if not any(is_unknown(t) for t in true):
                    ari, nmi = agreement(true, cl.labels)
                    diag[f"ari/{d}"], diag[f"nmi/{d}"] = ari, nmi
                    ari_sum += ari * len(local)
                    nmi_sum += nmi * len(local)
                    n_scored += len(local)
        if n_scored:
            diag["ari"], diag["nmi"] = ari_sum / n_scored, nmi_sum / n_scored
        return eff, info
