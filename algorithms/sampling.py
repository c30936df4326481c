"""GRPO + resampling baseline (FairGRPO paper, arXiv 2510.19893, Sec. baselines).

``balanced_indices`` oversamples minority demographic groups so that, within each data source,
every group appears as often as the largest one. Unknown groups (None / "unknown") form one
more group. Every original index is kept once; the extra copies are drawn with replacement
from the group's own indices.
"""

from __future__ import annotations

from collections.abc import Sequence

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
