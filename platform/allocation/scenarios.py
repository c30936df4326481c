"""Scenario name -> env creator, one registry; every entry is also a Tune env name.

The hospital simulators (:mod:`envs.hospital`) register lazily under their short names
(``urban``, ``rural``, ``pediatric``, ``surge``) and their gym ids (``HospitalRural-v0``,
...). Tests may register small envs with :func:`register_scenario`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from base.registry import Registry

SCENARIOS: Registry = Registry("scenario")
_HOSPITAL_LOADED = False


def _hospital_creator(name: str) -> Callable[[dict], Any]:
    def create(env_config: dict | None = None):
        import envs  # noqa: F401  (registers the gym ids)
        from envs.hospital import make_env

        return make_env(name, **dict(env_config or {}))

    return create


def _gym_creator(env_id: str) -> Callable[[dict], Any]:
    def create(env_config: dict | None = None):
        import gymnasium as gym

        import envs  # noqa: F401

        return gym.make(env_id, **dict(env_config or {}))

    return create


def load_hospital_scenarios() -> None:
    """Register the hospital scenarios (short names and gym ids) if ``envs.hospital`` exists."""
    global _HOSPITAL_LOADED
    if _HOSPITAL_LOADED:
        return
    try:
        import envs  # noqa: F401
        from envs.hospital import SCENARIOS as HOSPITAL
    except ImportError:
        return
    _HOSPITAL_LOADED = True
    import gymnasium as gym

    for short in HOSPITAL:
        if short not in SCENARIOS:
            SCENARIOS.register(short, _hospital_creator(short), help=f"hospital scenario {short!r}")
    for env_id in gym.registry:
        if env_id.startswith("Hospital") and env_id not in SCENARIOS:
            SCENARIOS.register(env_id, _gym_creator(env_id), help=f"gym id {env_id}")


def register_scenario(name: str, creator: Callable[[dict], Any], help: str = "") -> None:
    """Add a scenario (``creator(env_config) -> gym.Env``); idempotent for the same creator."""
    if name in SCENARIOS and SCENARIOS.get(name) is creator:
        return
    SCENARIOS.register(name, creator, help=help)


def names() -> list[str]:
    load_hospital_scenarios()
    return SCENARIOS.names()


def make(name: str, env_config: dict | None = None):
    """Build the env of scenario ``name`` locally (driver-side evaluation, group names)."""
    load_hospital_scenarios()
    return SCENARIOS.get(name)(env_config or {})


def register_with_tune(name: str) -> str:
    """Register scenario ``name`` with ``tune.register_env`` under the same name."""
    from ray.tune.registry import register_env

    load_hospital_scenarios()
    register_env(name, SCENARIOS.get(name))
    return name


def register_all_with_tune() -> list[str]:
    """Register every known scenario with Tune (hospital gym ids and short names)."""
    return [register_with_tune(n) for n in names()]
