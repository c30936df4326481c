"""Greedy evaluation of a trained allocation policy on held-out seeds.

Runs in the driver with the algorithm's RLModule (no env runners), one episode per seed,
so evaluation never shares seeds or env instances with training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from platform.allocation import rllib, scenarios
from platform.allocation.config import AllocationConfig
from typing import Any

import pandas as pd

MAX_EPISODE_STEPS = 100_000


def group_names_of(env) -> list[str]:
    """``env.unwrapped.group_names`` (or ``["0", "1", ...]`` from ``n_groups``)."""
    names = getattr(env.unwrapped, "group_names", None)
    if names:
        return [str(n) for n in names]
    n = getattr(env.unwrapped, "n_groups", 0) or 0
    return [str(i) for i in range(int(n))]


def run_episode(module, env, seed: int, group_names: Sequence[str]) -> dict[str, Any]:
    """One greedy episode -> ``{"seed", "return", "length", "group/<name>/return",
    "group/<name>/return_per_capita", **metrics}`` (per-group returns as
    :func:`platform.allocation.rllib.per_group_returns` defines them)."""
    obs, info = env.reset(seed=seed)
    infos, rewards = [info], []
    for _ in range(MAX_EPISODE_STEPS):
        obs, reward, terminated, truncated, info = env.step(rllib.greedy_action(module, obs))
        rewards.append(float(reward))
        infos.append(info)
        if terminated or truncated:
            break
    last_info = infos[-1]
    row: dict[str, Any] = {"seed": int(seed), "return": float(sum(rewards)),
                           "length": len(rewards)}
    for g, (ret, n) in sorted(rllib.per_group_returns(rewards, infos).items()):
        name = group_names[g] if g < len(group_names) else str(g)
        row[f"group/{name}/return"] = ret
        row[f"group/{name}/return_per_capita"] = ret / n if n else float("nan")
    for key, value in (last_info.get("episode_metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = float(value) if math.isfinite(float(value)) else float("nan")
    return row


def evaluate(algo, cfg: AllocationConfig, episodes: int, seeds: list[int] | None = None
             ) -> pd.DataFrame:
    """Greedy rollouts of ``algo``'s policy on ``cfg.scenario``.

    Args:
        algo: a built RLlib Algorithm (GroupRobustPPO or PPO).
        cfg: the run's config (scenario, group_key, env_config).
        episodes: number of episodes (rows).
        seeds: one env seed per episode; default ``cfg.eval_seeds(episodes)``, which are
            disjoint from the training seeds.
    Returns:
        DataFrame, one row per episode: ``episode``, ``seed``, ``return``, ``length``,
        ``group/<name>/return``, ``group/<name>/return_per_capita`` and the env's
        ``episode_metrics`` (``fairness/dp_score``, ...).
    """
    seeds = list(cfg.eval_seeds(episodes) if seeds is None else seeds)
    if len(seeds) != episodes:
        raise ValueError(f"seeds: got {len(seeds)} seeds for {episodes} episodes")
    env = scenarios.make(cfg.scenario, cfg.env_creator_config())
    module = rllib.module_of(algo)
    names = group_names_of(env)
    try:
        rows = [{"episode": i, **run_episode(module, env, s, names)} for i, s in enumerate(seeds)]
    finally:
        env.close()
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, prefix: str = "eval/") -> dict[str, float]:
    """Column means of the numeric columns (except episode/seed), namespaced ``eval/...``."""
    numeric = df.drop(columns=[c for c in ("episode", "seed") if c in df], errors="ignore")
    numeric = numeric.select_dtypes("number")
    return {f"{prefix}{k}": float(v) for k, v in numeric.mean(skipna=True).items()}
