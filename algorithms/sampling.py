"""Which prompts a step trains on: balanced resampling and DAPO's dynamic sampling.

``balanced_indices`` (the GRPO + resampling baseline, FairGRPO paper, arXiv 2510.19893, Sec.
baselines) oversamples minority demographic groups so that, within each data source, every
group appears as often as the largest one. Unknown groups (None / "unknown") form one more
group. Every original index is kept once; the extra copies are drawn with replacement from the
group's own indices.

``dynamic_filter`` (DAPO, Yu et al., arXiv 2503.14476, "dynamic sampling"; verl
``recipe/dapo/dapo_ray_trainer.py``, ``algorithm.filter_groups``): a prompt whose completions
all got the same score has zero group-relative advantage and is dropped (verl keeps prompts
with std > 0 or a single completion); the trainer generates more until the batch is full. The
result also says, per demographic group, how many prompts were dropped as all-correct or
all-wrong: where a hard minority group silently loses its training signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from base.errors import UsageError


def balanced_indices(data_source: Sequence[str], group: Sequence[str | None],
                     rng: np.random.Generator | int | None = None,
                     shuffle: bool = True) -> np.ndarray:
    """Indices (m,) into the P inputs with equal group counts per data source.

    data_source, group: length P. rng: numpy Generator or seed. Within source d with group
    sizes n_g, group g contributes max_h n_h rows: its n_g originals plus max_h n_h - n_g draws
    with replacement. Output order is shuffled with ``rng`` (``shuffle=False``: grouped by source
    then group, originals first). m = sum_d (number of groups in d) * (largest group in d).
    """
    from algorithms.advantages.core import UNKNOWN, is_unknown

    if len(data_source) != len(group):
        raise UsageError(
            f"group: length {len(group)} != len(data_source) {len(data_source)}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    buckets: dict[str, dict[str, list[int]]] = {}
    for i, (d, g) in enumerate(zip(data_source, group, strict=True)):
        key = UNKNOWN if is_unknown(g) else str(g)
        buckets.setdefault(str(d), {}).setdefault(key, []).append(i)
    parts: list[np.ndarray] = []
    for groups in buckets.values():
        target = max(len(v) for v in groups.values())
        for members in groups.values():
            idx = np.asarray(members, dtype=np.int64)
            parts.append(idx)
            if target > len(idx):
                parts.append(gen.choice(idx, size=target - len(idx), replace=True))
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return gen.permutation(out) if shuffle else out


@dataclass
class FilterResult:
    """``keep`` (P,) bool; ``by_group[g]`` = {"prompts", "dropped", "all_correct", "all_wrong"}."""

    keep: np.ndarray
    by_group: dict[str, dict[str, int]] = field(default_factory=dict)

    def merge(self, other: FilterResult) -> FilterResult:
        """Counts of two generation rounds added (``keep`` of ``other``)."""
        out = {g: dict(v) for g, v in self.by_group.items()}
        for g, v in other.by_group.items():
            acc = out.setdefault(g, dict.fromkeys(v, 0))
            for k, n in v.items():
                acc[k] += n
        return FilterResult(other.keep, out)

    def metrics(self, prefix: str = "filter") -> dict[str, float]:
        """``filter/dropped``, ``filter/prompts`` and ``filter/by_group/<g>/{dropped,all_correct,
        all_wrong}`` (every group seen, 0 when none of its prompts was dropped)."""
        out = {f"{prefix}/prompts": float(sum(v["prompts"] for v in self.by_group.values())),
               f"{prefix}/dropped": float(sum(v["dropped"] for v in self.by_group.values()))}
        for g in sorted(self.by_group):
            for k in ("dropped", "all_correct", "all_wrong"):
                out[f"{prefix}/by_group/{g}/{k}"] = float(self.by_group[g][k])
        return out


def dynamic_filter(scores: np.ndarray, prompt_index: np.ndarray, groups: Sequence[str],
                   correct: np.ndarray | None = None) -> FilterResult:
    """Prompts to keep, and what was dropped per group.

    scores (n,): the per-completion score filtered on (DAPO: accuracy; here the reward before
    shaping); prompt_index (n,) in [0, P); groups (P,) group key per prompt; correct (n,) bool
    or None. A prompt is dropped when it has >= 2 completions and all its scores are equal. A
    dropped prompt is all-correct when every completion is correct, all-wrong when none is;
    without ``correct``, at the batch's highest / lowest score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(prompt_index, dtype=np.int64)
    P = len(groups)
    count = np.bincount(idx, minlength=P)
    lo = np.full(P, np.inf)
    hi = np.full(P, -np.inf)
    np.minimum.at(lo, idx, scores)
    np.maximum.at(hi, idx, scores)
    constant = (count >= 2) & (lo == hi)
    if correct is not None:
        right = np.bincount(idx, weights=np.asarray(correct, dtype=np.float64), minlength=P)
        all_correct, all_wrong = constant & (right == count), constant & (right == 0)
    else:
        top, bottom = (scores.max(), scores.min()) if scores.size else (0.0, 0.0)
        all_correct, all_wrong = constant & (lo == top), constant & (lo == bottom) & (top != bottom)
    import pandas as pd

    code, names = pd.factorize(np.asarray([str(g) for g in groups], dtype=object), sort=False)
    seen = count > 0
    tally = {k: np.bincount(code, weights=v, minlength=len(names)).astype(np.int64)
             for k, v in (("prompts", seen), ("dropped", constant), ("all_correct", all_correct),
                          ("all_wrong", all_wrong))}
    by_group = {str(g): {k: int(tally[k][j]) for k in tally}
                for j, g in enumerate(names) if tally["prompts"][j] > 0}
    return FilterResult(~constant & (count > 0), by_group)
