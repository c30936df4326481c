"""Per-episode quantities of the allocation track, shared by the RLlib episode callback
(:mod:`platform.allocation.rllib`) and the evaluation (:mod:`platform.allocation.evaluate`).

Pure numpy: importing it costs nothing (a rule's evaluation never imports torch or RLlib).
"""

from __future__ import annotations

import numpy as np


def per_group_returns(rewards: list[float] | np.ndarray, infos: list[dict], key: str = "group",
                      reward_key: str = "reward_by_group") -> dict[int, tuple[float, int]]:
    """Each group's return in one episode and how many decisions concerned it.

    Args:
        rewards: (T,) reward of step t.
        infos: (T+1,) infos aligned with observations (``infos[0]`` from reset);
            ``infos[t + 1][key]`` is the group the decision of step t concerned and
            ``infos[t + 1][reward_key]`` (when present) the (G,) reward of each group's stream.
    Returns:
        group id -> ``(return, decisions)``: the sum of the group's stream (without streams,
        the rewards of the steps that decided about the group), and the number of those
        steps. Per capita = return / decisions.
    """
    returns: dict[int, float] = {}
    decisions: dict[int, int] = {}
    for t, r in enumerate(rewards):
        info = infos[t + 1] if t + 1 < len(infos) else {}
        if not isinstance(info, dict) or key not in info:
            continue
        g = int(info[key])
        decisions[g] = decisions.get(g, 0) + 1
        streams = info.get(reward_key)
        if streams is None:
            returns[g] = returns.get(g, 0.0) + float(r)
            continue
        for h, v in enumerate(np.asarray(streams, np.float64).reshape(-1)):
            returns[h] = returns.get(h, 0.0) + float(v)
    return {g: (ret, decisions.get(g, 0)) for g, ret in returns.items()}
