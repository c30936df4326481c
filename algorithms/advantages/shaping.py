"""Reward shaping applied before an estimator: DAPO's overlong penalty.

DAPO (Yu et al., arXiv 2503.14476, "soft overlong punishment"), as verl's
``verl/workers/reward_manager/dapo.py`` (``DAPORewardManager.__call__``) adds it: with the
generation cap L_max, a buffer of L_buf tokens before it and a completion of L tokens,

    penalty(L) = min(-(L - (L_max - L_buf)) / L_buf * factor, 0)

i.e. 0 up to L_max - L_buf, falling linearly to -factor at L_max. The shaped reward is
r + penalty(L).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from base.errors import ConfigError


def overlong_penalty(lengths: Any, max_len: int, buffer: int, factor: float = 1.0) -> np.ndarray:
    """(n,) penalties <= 0 for completion lengths (n,) in tokens.

    Raises ConfigError naming ``buffer`` unless 1 <= buffer <= max_len (verl asserts
    max_resp_len >= overlong_buffer.len), and ``factor`` unless factor >= 0.
    """
    if not 1 <= buffer <= max_len:
        raise ConfigError("buffer", f"({buffer}) must be in [1, max_len={max_len}]")
    if not factor >= 0:
        raise ConfigError("factor", f"({factor}) must be >= 0")
    L = np.asarray(lengths, dtype=np.float64)
    expected = max_len - buffer
    return np.minimum(-(L - expected) / buffer * factor, 0.0)
