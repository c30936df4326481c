"""Evaluation of an allocation policy on held-out seeds: the one evaluation path.

Trained policies (greedy actions of the algorithm's RLModule, :func:`evaluate`) and
rule-based ones (:mod:`envs.hospital.rules`, :func:`evaluate_rule`) run through the same
:func:`run_episode` on the same seeds (``cfg.eval_seeds``: ``eval_seed_base + i``), one
single env per episode in the driver (no env runners), so evaluation never shares seeds or
env instances with training and every policy is measured by the same rows and metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from platform.allocation import scenarios
from platform.allocation.episodes import per_group_returns
from typing import Any

import numpy as np
import pandas as pd

MAX_EPISODE_STEPS = 100_000


def group_names_of(env) -> list[str]:
    """``env.unwrapped.group_names`` (or ``["0", "1", ...]`` from ``n_groups``)."""
    names = getattr(env.unwrapped, "group_names", None)
    if names:
        return [str(n) for n in names]
    n = getattr(env.unwrapped, "n_groups", 0) or 0
    return [str(i) for i in range(int(n))]


#: ``act(obs, env) -> action``: a policy for one episode
Act = Callable[[Any, Any], Any]


def run_episode(act: Act, env, seed: int, group_names: Sequence[str]) -> dict[str, Any]:
    """One episode of ``act`` -> ``{"seed", "return", "length", "group/<name>/return",
    "group/<name>/return_per_capita", **metrics}`` (per-group returns as
    :func:`platform.allocation.episodes.per_group_returns` defines them)."""
    obs, info = env.reset(seed=seed)
    infos, rewards = [info], []
    for _ in range(MAX_EPISODE_STEPS):
        obs, reward, terminated, truncated, info = env.step(act(obs, env))
        rewards.append(float(reward))
        infos.append(info)
        if terminated or truncated:
            break
    last_info = infos[-1]
    row: dict[str, Any] = {"seed": int(seed), "return": float(sum(rewards)),
                           "length": len(rewards)}
    for g, (ret, n) in sorted(per_group_returns(rewards, infos).items()):
        name = group_names[g] if g < len(group_names) else str(g)
        row[f"group/{name}/return"] = ret
        row[f"group/{name}/return_per_capita"] = ret / n if n else float("nan")
    for key, value in (last_info.get("episode_metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = float(value) if math.isfinite(float(value)) else float("nan")
    return row


def evaluate_policy(policy_for: Callable[[int], Act], cfg, episodes: int,
                    seeds: list[int] | None = None) -> pd.DataFrame:
    """Episodes of a policy on ``cfg.scenario``, one per seed.

    Args:
        policy_for: episode seed -> ``act(obs, env)`` for that episode.
        cfg: the run's config (``AllocationConfig`` or ``HeuristicConfig``: scenario,
            group_key, env_config, eval seeds).
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
    names = group_names_of(env)
    try:
        rows = [{"episode": i, **run_episode(policy_for(s), env, s, names)}
                for i, s in enumerate(seeds)]
    finally:
        env.close()
    return pd.DataFrame(rows)


def evaluate(algo, cfg, episodes: int, seeds: list[int] | None = None) -> pd.DataFrame:
    """Greedy rollouts of ``algo``'s policy (a built GroupRobustPPO or PPO Algorithm);
    see :func:`evaluate_policy`."""
    from platform.allocation import rllib

    module = rllib.module_of(algo)

    def greedy(obs, env):
        return rllib.greedy_action(module, obs)

    with rllib.eval_mode(module):
        return evaluate_policy(lambda seed: greedy, cfg, episodes, seeds)


#: stream of a rule's own randomness, apart from the env's (which the seed also drives)
RULE_STREAM = 0x5EED


def rule_rng(seed: int, episode_seed: int) -> np.random.Generator:
    """The rule's generator for one episode: from the run's ``seed`` and the episode's."""
    return np.random.default_rng([int(seed), int(episode_seed), RULE_STREAM])


def evaluate_rule(name: str, cfg, episodes: int, seeds: list[int] | None = None) -> pd.DataFrame:
    """Episodes of the rule ``name`` (:data:`envs.hospital.rules.RULES`) on the same seeds and
    with the same rows as :func:`evaluate`; a random rule draws from :func:`rule_rng`."""
    from envs.hospital import rules

    def policy_for(episode_seed: int) -> Act:
        act = rules.policy(name, rule_rng(cfg.seed, episode_seed))
        return lambda obs, env: act(env)

    return evaluate_policy(policy_for, cfg, episodes, seeds)


def summarize(df: pd.DataFrame, prefix: str = "eval/") -> dict[str, float]:
    """Column means of the numeric columns (except episode/seed), namespaced ``eval/...``."""
    numeric = df.drop(columns=[c for c in ("episode", "seed") if c in df], errors="ignore")
    numeric = numeric.select_dtypes("number")
    return {f"{prefix}{k}": float(v) for k, v in numeric.mean(skipna=True).items()}
