"""FairGRPO and FairGRPO without demographic labels (Dai et al., arXiv 2510.19893), as
fairness weightings over any base estimator (``weighting.py``).

Reference: ``DDVD233/mirl`` (a verl fork), ``verl/trainer/ppo/core_algos.py``,
``compute_fair_grpo_outcome_advantage`` and ``_select_k_elbow`` / ``_cluster_info_question``.
Per prompt, the base estimator's advantage s_i (GRPO: (r_i - mean_q)/(std_q + eps)). Running
history per data source d and per (d, demographic group g) holds N (prompts) and mu (mean
reward). With T_d = max(sqrt(N_d) * mu_d, eps) and T_g = sqrt(N_g) * mu_g:

    a_i = s_i / (T_d * T_g),   then   a <- a / (std(a) + eps)

so rare groups (small N) and hard groups (small mu) get larger advantages. Wholly unknown
demographics ("unknown" here, "UNK" in the reference) become latent groups found by k-means
over the data source's history of unlabelled prompts (see ``discovery``); ``fairgrpo_nd`` is
the same weighting under the name of the paper's no-label variant. Where this module departs
from the reference it is a named option next to the reference's (defaults in brackets):

- ``negative_rewards`` [``shift``]: the reference's T_g is not floored, so a group whose mean
  reward is below 0 gets its advantages' sign flipped and a zero factor leaves the score
  unscaled (``"reference"``). ``"shift"``: difficulty is measured on the reward scale shifted
  per data source so its lowest reward seen so far counts as 0 (m_d = min(0, running min of d);
  mu - m_d in T_d and T_g; identical to the reference while rewards are >= 0), and
  T_d * T_g is clamped to [eps, factor_max]. ``"error"``: rewards below 0 raise.
- ``unknown`` [``cluster``, the reference]: ``"group"`` makes every unknown prompt of a data
  source one more group, "unknown" (this project's earlier ``fair_grpo``).
- ``history`` [``unique``]: N counts unique prompts (by ``prompt_id``) and mu is the mean of
  their latest mean rewards, so N is the group's size, not the run's length; ``"visits"``
  is the reference: every visit counts and mu is the mean over every rollout of every visit.
- ``cluster_history`` [``source``, the reference]: k-means over the data source's history of
  unlabelled prompts (their latest reward vectors, or every visit's with
  ``history="visits"``); N_c = history rows in cluster c, mu_c = their mean reward.
  ``"batch"``: this batch's unlabelled prompts only, N_c = N_unknown(d) x c's share.
- ``elbow`` [``drop``, the reference]: stop at the first k whose inertia drop is below
  ``elbow_threshold`` x the previous drop; ``"inertia"``: move on while the drop is at least
  that fraction of the previous inertia.

History is updated with the batch before factors are computed, so every group in the batch
has N >= 1 (as in the reference).
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
    as_str_array,
    is_unknown,
    normalise_groups,
    safe_std,
)
from algorithms.advantages.core import (
    codes as _codes,
)
from algorithms.advantages.discovery import agreement, elbow_kmeans, reward_matrix
from algorithms.advantages.weighting import Weighted, Weighting, preset, register_weighting
from base.errors import require

STATE_VERSION = 3
SEP = "\x1f"


class VectorStore:
    """One data source's history of unlabelled prompts: a feature row (sorted rollout rewards,
    or caller features) and the mean reward per row. ``unique=True``: one row per prompt id, a
    revisit replaces it; False: one row per visit (the reference; grows with the run)."""

    def __init__(self, dim: int, unique: bool):
        self.dim, self.unique = dim, unique
        self.ids: list[str] = []
        self.row: dict[str, int] = {}
        self.X = np.zeros((0, dim))
        self.m = np.zeros(0)

    def add(self, ids: list[str], X: np.ndarray, means: np.ndarray) -> np.ndarray:
        """Insert rows; returns the (len(ids),) row of each input."""
        rows = np.empty(len(ids), np.int64)
        for i, pid in enumerate(ids):
            j = self.row.get(pid) if self.unique else None
            if j is None:
                j = len(self.ids)
                self.ids.append(pid)
                if self.unique:
                    self.row[pid] = j
            rows[i] = j
        n = len(self.ids)
        if n > len(self.m):
            cap = max(n, 2 * len(self.m), 64)
            X2, m2 = np.zeros((cap, self.dim)), np.zeros(cap)
            X2[:len(self.m)], m2[:len(self.m)] = self.X, self.m
            self.X, self.m = X2, m2
        self.X[rows], self.m[rows] = X, means
        return rows

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.ids)
        return self.X[:n], self.m[:n]

    def state_dict(self) -> dict:
        X, m = self.data()
        return {"dim": self.dim, "ids": list(self.ids), "X": X.tolist(), "m": m.tolist()}

    @classmethod
    def from_state(cls, d: dict, unique: bool) -> VectorStore:
        store = cls(int(d["dim"]), unique)
        if d["ids"]:
            store.add([str(i) for i in d["ids"]], np.asarray(d["X"], float).reshape(-1, store.dim),
                      np.asarray(d["m"], float))
        return store


class FairHistory:
    """FairGRPO's running history: (N, mu) per data source and per (source, group).

    ``mode="unique"``: the latest mean reward of every unique prompt, as columns; (N, mu) are
    recomputed from them by ``np.bincount`` after each update (exact; memory one float + two
    ints per unique prompt). ``mode="visits"`` (the reference): running (visits, rollouts,
    reward sum) per key. Also the running minimum reward per source (``negative_rewards=
    "shift"``) and, for latent groups, a :class:`VectorStore` per source.

    ``state_dict()`` is plain JSON; loading restores the same row order, so later steps are
    bit-identical. Version 2 states (unique mode, no vectors) still load.
    """

    def __init__(self, mode: str = "unique") -> None:
        self.mode = mode
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
        self._visits: dict[str, list[float]] = {}   # key -> [visits, rollouts, reward sum]
        self.min_reward: dict[str, float] = {}
        self.vectors: dict[str, VectorStore] = {}

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
               means: np.ndarray, counts: np.ndarray | None = None,
               rewards_min: dict[str, float] | None = None) -> None:
        """Record a batch: prompt_ids (m,) str; sources, groups (m,) object arrays of str;
        means (m,) mean reward per prompt; counts (m,) completions per prompt (visits mode);
        rewards_min: lowest reward per source in the batch."""
        for d, lo in (rewards_min or {}).items():
            self.min_reward[d] = min(self.min_reward.get(d, 0.0), float(lo))
        if self.mode == "visits":
            self._update_visits(sources, groups, means, counts)
        else:
            self._update_unique(prompt_ids, sources, groups, means)

    def _update_visits(self, sources, groups, means, counts) -> None:
        counts = np.ones(len(means)) if counts is None else np.asarray(counts, float)
        keys = np.concatenate([np.asarray(sources, dtype=object),
                               np.asarray(sources, dtype=object) + SEP + groups])
        vals = np.tile(np.stack([np.ones(len(means)), counts, means * counts], 1), (2, 1))
        names, code = _codes(keys)
        agg = np.stack([np.bincount(code, weights=vals[:, j], minlength=len(names))
                        for j in range(3)], 1)
        for k, row in zip(names, agg.tolist(), strict=True):
            acc = self._visits.setdefault(k, [0.0, 0.0, 0.0])
            for j in range(3):
                acc[j] += row[j]

    def _update_unique(self, prompt_ids, sources, groups, means) -> None:
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
        pair = self._codes_for(np.asarray(sources, dtype=object) + SEP + groups,
                               self._pair_code, self._pair_names,
                               lambda k: tuple(k.split(SEP, 1)))
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

    def stats(self, d: str, g: str | None = None) -> tuple[float, float]:
        """(N, mu) for source d, or for group g within d; (0, 0.0) if never seen.
        unique: N unique prompts, mu the mean of their latest mean rewards; visits: N visits,
        mu the mean over every rollout of every visit."""
        if self.mode == "visits":
            acc = self._visits.get(d if g is None else f"{d}{SEP}{g}")
            if acc is None or acc[0] <= 0:
                return 0, 0.0
            return acc[0], acc[2] / acc[1] if acc[1] > 0 else 0.0
        sc, ss, pc, ps = self._aggregates()
        if g is None:
            j = self._src_code.get(d)
            cnt, tot = (sc, ss) if j is not None else (None, None)
        else:
            j = self._pair_code.get(f"{d}{SEP}{g}")
            cnt, tot = (pc, ps) if j is not None else (None, None)
        if j is None or cnt[j] <= 0:
            return 0, 0.0
        return int(cnt[j]), float(tot[j] / cnt[j])

    def shift(self, d: str) -> float:
        """m_d = min(0, lowest reward seen in source d)."""
        return min(0.0, self.min_reward.get(d, 0.0))

    def store(self, d: str, dim: int) -> VectorStore:
        """Source d's unlabelled-prompt history; errors if its row length changed."""
        st = self.vectors.get(d)
        if st is None:
            st = self.vectors[d] = VectorStore(dim, unique=self.mode == "unique")
        elif st.dim != dim:
            raise AdvantageInputError(
                f"rewards: data source {d!r} keeps unlabelled prompts' vectors of length {st.dim}, "
                f"this batch has {dim} (cluster_history='source' needs the same number of "
                "completions per prompt every step; use cluster_history='batch' otherwise)")
        return st

    def state_dict(self) -> dict:
        out: dict[str, Any] = {"version": STATE_VERSION, "mode": self.mode,
                               "min_reward": dict(self.min_reward),
                               "vectors": {d: s.state_dict() for d, s in self.vectors.items()}}
        if self.mode == "visits":
            out["visits"] = {k: list(v) for k, v in self._visits.items()}
            return out
        n = len(self._ids)
        src, pair, mean = self._src[:n].tolist(), self._pair[:n].tolist(), self._mean[:n].tolist()
        out["prompts"] = {pid: [self._src_names[s], self._pair_names[p][1], m]
                          for pid, s, p, m in zip(self._ids, src, pair, mean, strict=True)}
        return out

    def load_state_dict(self, d: dict) -> None:
        version = d.get("version") if isinstance(d, dict) else d
        if version not in (2, STATE_VERSION):
            raise AdvantageInputError(f"state.version: expected 2 or {STATE_VERSION}, got {version!r}")
        mode = d.get("mode", "unique")
        if mode != self.mode:
            raise AdvantageInputError(
                f"state.mode: the saved history counts {mode!r}, this estimator {self.mode!r} "
                "(config field history)")
        self.__init__(self.mode)
        self.min_reward = {str(k): float(v) for k, v in d.get("min_reward", {}).items()}
        self.vectors = {str(k): VectorStore.from_state(v, self.mode == "unique")
                        for k, v in d.get("vectors", {}).items()}
        if mode == "visits":
            self._visits = {str(k): [float(x) for x in v] for k, v in d["visits"].items()}
            return
        items = list(d["prompts"].items())
        if items:
            self._update_unique([str(k) for k, _ in items],
                                np.array([v[0] for _, v in items], dtype=object),
                                np.array([v[1] for _, v in items], dtype=object),
                                np.array([float(v[2]) for _, v in items]))

    def __len__(self) -> int:
        if self.mode == "visits":
            return int(sum(v[0] for k, v in self._visits.items() if SEP not in k))
        return len(self._ids)


def scale_T(n: float, mu: float, eps: float) -> float:
    """T = max(sqrt(N) * mu, eps)."""
    return max(math.sqrt(max(n, 0.0)) * mu, eps)


def _choice(field: str, value: Any, allowed: tuple) -> None:
    require(value in allowed, field, f"got {value!r}; allowed: {', '.join(map(repr, allowed))}")


@dataclass
class FairGRPOConfig(BaseConfig):
    factor_max: float = 1e6
    """upper clamp of T_d * T_g (the lower clamp is eps; not applied with negative_rewards=reference)"""
    batch_std_normalize: bool = True
    """divide the scaled batch by its std (the paper's and the reference's final step)"""
    negative_rewards: Literal["shift", "error", "reference"] = "shift"
    """difficulty on a reward scale shifted per data source (its lowest reward seen counts as 0;
    same as the reference for rewards >= 0) | raise on a reward < 0 | the reference's factor as
    written (a group with mean reward < 0 has its advantages' sign flipped)"""
    history: Literal["unique", "visits"] = "unique"
    """N counts unique prompts, mu = mean of their latest mean rewards | every visit counts and
    mu = mean over all rollouts (the reference; N grows with the number of epochs)"""
    unknown: Literal["cluster", "group"] = "cluster"
    """prompts whose group is wholly unknown: latent groups by k-means per data source (the
    reference) | one more group "unknown" (this project's earlier fair_grpo)"""
    k_max: int = 3
    """largest number of latent groups per data source (k in {1, ..., k_max})"""
    elbow: Literal["drop", "inertia"] = "drop"
    """stop at the first k whose inertia drop is < elbow_threshold x the previous drop (the
    reference) | move to k+1 while the drop is >= elbow_threshold x the previous inertia"""
    elbow_threshold: float = 0.1
    """the elbow rule's fraction (0.1 in the reference)"""
    cluster_history: Literal["source", "batch"] = "source"
    """cluster the data source's history of unlabelled prompts (the reference) | this batch's"""
    cluster_on: Literal["rewards", "features"] = "rewards"
    """cluster prompts on their rollout-reward vectors, or on ``meta.features`` (embeddings)"""
    random_state: int = 0
    """KMeans random_state (fixed so a step is reproducible)"""
    n_init: int | None = None
    """None: one Lloyd run from the best contiguous split (see discovery); int: k-means++ restarts"""
    kmeans_init: Literal["seeded", "reference"] = "seeded"
    """seeded: identical points merged, Lloyd from the best contiguous split (or n_init
    k-means++ restarts) | reference: sklearn KMeans(n_init="auto") on the raw points, one
    k-means++ run as the reference (can stop in a worse optimum, which moves the elbow)"""

    def __post_init__(self):
        super().__post_init__()
        require(self.factor_max > self.eps, "factor_max",
                f"({self.factor_max}) must be > eps ({self.eps})")
        _choice("negative_rewards", self.negative_rewards, ("shift", "error", "reference"))
        _choice("history", self.history, ("unique", "visits"))
        _choice("unknown", self.unknown, ("cluster", "group"))
        require(1 <= self.k_max <= 10, "k_max", f"must be in [1, 10], got {self.k_max}")
        require(0.0 <= self.elbow_threshold < 1.0, "elbow_threshold",
                f"must be in [0, 1), got {self.elbow_threshold}")
        _choice("elbow", self.elbow, ("drop", "inertia"))
        _choice("cluster_history", self.cluster_history, ("source", "batch"))
        _choice("cluster_on", self.cluster_on, ("rewards", "features"))
        _choice("kmeans_init", self.kmeans_init, ("seeded", "reference"))
        require(self.n_init is None or self.n_init >= 1, "n_init", f"must be >= 1, got {self.n_init}")


FairGRPONDConfig = FairGRPOConfig  # one config: fair_grpo_nd is the same weighting


def _source_minima(rewards: np.ndarray, prompt_index: np.ndarray, sources_all: np.ndarray
                   ) -> dict[str, float]:
    """Lowest reward per data source in the batch (only sources with a reward < 0)."""
    if rewards.size == 0 or rewards.min() >= 0:
        return {}
    src = sources_all[prompt_index]
    neg = rewards < 0
    return {str(d): float(rewards[neg & (src == d)].min()) for d in set(src[neg].tolist())}


@register_weighting("fairgrpo")
class FairGRPOWeighting(Weighting):
    """FairGRPO: advantages / (T_d * T_g) from running history, then / batch std (arXiv 2510.19893)."""

    Config = FairGRPOConfig

    def init_state(self) -> FairHistory:
        return FairHistory(self.config.history)

    def apply(self, b: Batch, s: np.ndarray, state: Any) -> AdvantageResult:
        if not isinstance(state, FairHistory):
            raise AdvantageInputError(
                f"state: {self.name} needs the object from init_state(), got {type(state).__name__}")
        cfg = self.config
        if cfg.negative_rewards == "error" and b.rewards.size and b.rewards.min() < 0:
            raise AdvantageInputError(
                f"rewards: the {self.name} weighting measures difficulty by the mean reward and "
                f"needs rewards >= 0 (negative_rewards='error'), got {b.rewards.min():g}; use "
                "negative_rewards='shift' or a reward in [0, 1]")
        present = np.flatnonzero(b.present)
        diag: dict[str, float] = {}
        src_all = as_str_array(b.meta.data_source)
        sources = src_all[present]
        groups = normalise_groups(b.meta.group)[present]
        ids = as_str_array(b.meta.prompt_id)[present].tolist()
        state.update(ids, sources, groups, b.mean[present], b.count[present],
                     _source_minima(b.rewards, b.prompt_index, src_all))
        eff, cluster_stats = self._discover(b, present, sources, groups, ids, state, diag)
        factor = np.ones(b.n_prompts)
        factor[present] = self._factors(sources, eff, cluster_stats, state, diag)
        f = factor[b.prompt_index]
        if cfg.negative_rewards == "reference":  # the reference keeps s where s / factor is nan/inf
            with np.errstate(divide="ignore", invalid="ignore"):
                a = s / f
            a = np.where(np.isfinite(a), a, s)
        else:
            a = s / f
        sd = safe_std(a)
        if cfg.batch_std_normalize and sd > 0:
            a = a / (sd + cfg.eps)
        if present.size:
            fp = factor[present]
            diag.update({"factor/min": float(fp.min()), "factor/max": float(fp.max()),
                         "factor/mean": float(fp.mean())})
        diag["history/prompts"] = float(len(state))
        prompt_group = np.full(b.n_prompts, UNKNOWN, dtype=object)
        prompt_group[present] = sources + "|" + eff
        return AdvantageResult(a, diag, prompt_group=prompt_group.tolist())

    def _factors(self, sources: np.ndarray, eff: np.ndarray,
                 cluster_stats: dict[tuple[str, str], tuple[float, float]], state: FairHistory,
                 diag: dict) -> np.ndarray:
        """(m,) T_d * T_g per present prompt (clamped unless negative_rewards='reference')."""
        cfg = self.config
        ref = cfg.negative_rewards == "reference"
        src_keys, src_code = _codes(sources)
        pair_keys, pair_code = _codes(sources + SEP + eff)
        shift = {d: 0.0 if ref else state.shift(d) for d in src_keys}
        t_d = np.empty(len(src_keys))
        for j, d in enumerate(src_keys):
            n, mu = state.stats(d)
            t_d[j] = scale_T(n, mu - shift[d], cfg.eps)
            diag[f"T_d/{d}"] = float(t_d[j])
            if shift[d]:
                diag[f"reward_shift/{d}"] = float(shift[d])
        t_g = np.empty(len(pair_keys))
        for j, key in enumerate(pair_keys):
            d, g = key.split(SEP, 1)
            n, mu = cluster_stats[(d, g)] if (d, g) in cluster_stats else state.stats(d, g)
            t_g[j] = math.sqrt(max(n, 0.0)) * mu if ref else scale_T(n, mu - shift[d], cfg.eps)
        diag["n_groups"] = float(len(pair_keys))
        factor = t_d[src_code] * t_g[pair_code]
        return factor if ref else np.clip(factor, cfg.eps, cfg.factor_max)

    def _discover(self, b: Batch, present: np.ndarray, sources: np.ndarray, groups: np.ndarray,
                  ids: list[str], state: FairHistory, diag: dict
                  ) -> tuple[np.ndarray, dict[tuple[str, str], tuple[float, float]]]:
        """Latent groups for wholly unknown prompts (``unknown="cluster"``): (effective group
        per present prompt, {(d, cluster key): (N_c, mu_c)})."""
        cfg = self.config
        unknown = groups == UNKNOWN
        diag["unknown_fraction"] = float(unknown.mean()) if unknown.size else 0.0
        if cfg.unknown == "group" or not unknown.any():
            return groups, {}
        if cfg.cluster_on == "features":
            if b.meta.features is None:
                raise AdvantageInputError(
                    "meta.features: required when cluster_on='features' (shape (n_prompts, d))")
            feats = np.asarray(b.meta.features, dtype=np.float64)
        else:
            feats = reward_matrix(b.rewards, b.prompt_index, b.count)
        eff = groups.copy()
        info: dict[tuple[str, str], tuple[float, float]] = {}
        scores = []
        for d in dict.fromkeys(sources[unknown].tolist()):
            local = np.flatnonzero(unknown & (sources == d))   # positions within ``present``
            prompts = present[local]
            if cfg.cluster_history == "source":
                store = state.store(d, feats.shape[1])
                rows = store.add([ids[i] for i in local], feats[prompts], b.mean[prompts])
                X, m = store.data()
                diag[f"history/unknown/{d}"] = float(len(m))
            else:
                rows, X, m = np.arange(len(local)), feats[prompts], b.mean[prompts]
            cl = elbow_kmeans(X, cfg.k_max, cfg.elbow_threshold, cfg.random_state, cfg.n_init,
                              rule=cfg.elbow, init=cfg.kmeans_init)
            diag[f"k/{d}"] = float(cl.k)
            names = np.array([f"{UNKNOWN}/cluster{c}" for c in range(cl.k)], dtype=object)
            labels = cl.labels[rows]
            eff[local] = names[labels]
            sizes = np.bincount(cl.labels, minlength=cl.k).astype(float)
            sums = np.bincount(cl.labels, weights=m, minlength=cl.k)
            n_unknown = state.stats(d, UNKNOWN)[0]
            for c in range(cl.k):
                if sizes[c] == 0:
                    continue
                n_c = sizes[c] if cfg.cluster_history == "source" else n_unknown * sizes[c] / len(local)
                info[(d, str(names[c]))] = (n_c, sums[c] / sizes[c])
            scores.append(self._agreement(b, prompts, labels, d, diag))
        scored = [s for s in scores if s is not None]
        if scored:
            n = sum(w for _, _, w in scored)
            diag["ari"] = sum(a * w for a, _, w in scored) / n
            diag["nmi"] = sum(x * w for _, x, w in scored) / n
        return eff, info

    @staticmethod
    def _agreement(b: Batch, prompts: np.ndarray, labels: np.ndarray, d: str, diag: dict):
        """(ARI, NMI, weight) of the batch's unlabelled prompts of d vs ``meta.true_group``."""
        truth = b.meta.true_group
        if truth is None:
            return None
        true = [truth[p] for p in prompts]
        if any(is_unknown(t) for t in true):
            return None
        ari, nmi = agreement(true, labels)
        diag[f"ari/{d}"], diag[f"nmi/{d}"] = ari, nmi
        return ari, nmi, len(prompts)


@register_weighting("fairgrpo_nd")
class FairGRPONDWeighting(FairGRPOWeighting):
    """FairGRPO without labels: the fairgrpo weighting under the name of the no-label variant."""


@preset("fair_grpo", base="grpo", weighting="fairgrpo")
class FairGRPO(Weighted):
    """FairGRPO: GRPO scores divided by T_d * T_g from running history (arXiv 2510.19893)."""


@preset("fair_grpo_nd", base="grpo", weighting="fairgrpo_nd")
class FairGRPOND(Weighted):
    """FairGRPO without labels: unknown groups found per data source by k-means + elbow."""
