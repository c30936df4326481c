"""Scenario name -> env creator, one registry; every entry is also a Tune env name.

Enumerated from the one scenario table, ``envs.hospital.SCENARIOS`` (envs/hospital/config.py):
each hospital preset registers under its short name (``rural``) and its gym id
(``HospitalRural-v0``, derived in :mod:`envs.hospital.registration`); the configurable
``Hospital-v0`` is there too. Adding a preset to that table is all it takes to train, sweep
and validate it. ``starved`` (``StarvedMinority-v0``, :mod:`envs.starved`) is the two-group
problem on which the group-robust objectives show their effect. Tests may register small envs
with :func:`register_scenario`.

**Batched envs.** A creator registered with ``vectorized=True`` also builds a batched
``gymnasium.vector.VectorEnv`` when its env config holds ``num_envs`` (RLlib's
``gym_env_vectorize_mode="vector_entry_point"`` calls it so): the hospital creators return
``envs.hospital.vector.HospitalVectorEnv``, N hospitals stepped by one numpy core with the
semantics of ``SyncVectorEnv`` over N single envs. :func:`vectorized` says which scenarios
have one; the others (``starved``, test envs) are sampled through ``SyncVectorEnv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from base.registry import Registry

SCENARIOS: Registry = Registry("scenario")
_VECTORIZED: set[str] = set()  # scenarios whose creator also builds a batched VectorEnv
_HOSPITAL_LOADED = False
#: env-config key under which RLlib's vector_entry_point asks a creator for N envs
NUM_ENVS_KEY = "num_envs"


def _hospital_creator(name: str) -> Callable[[dict], Any]:
    def create(env_config: dict | None = None):
        from envs.hospital import make_env, make_vector_env

        config = dict(env_config or {})
        num_envs = config.pop(NUM_ENVS_KEY, None)
        if num_envs is not None:
            return make_vector_env(name, int(num_envs), **config)
        return make_env(name, **config)

    return create


def _gym_creator(env_id: str) -> Callable[[dict], Any]:
    def create(env_config: dict | None = None):
        import gymnasium as gym

        import envs.hospital.registration  # noqa: F401  (registers the gym ids)

        config = dict(env_config or {})
        num_envs = config.pop(NUM_ENVS_KEY, None)
        if num_envs is not None:
            return gym.make_vec(env_id, num_envs=int(num_envs),
                                vectorization_mode="vector_entry_point", **config)
        return gym.make(env_id, **config)

    return create


STARVED_ID = "StarvedMinority-v0"


def _starved_creator(env_config: dict | None = None):
    from envs.starved import StarvedMinorityEnv

    config = {k: v for k, v in dict(env_config or {}).items() if k != "group_key"}
    return StarvedMinorityEnv(config)


def hospital_names() -> list[str]:
    """The short names of the hospital presets, in table order (urban, rural, ...)."""
    from envs.hospital import SCENARIOS as TABLE

    return list(TABLE)


def load_hospital_scenarios() -> None:
    """Register every hospital preset (short name and gym id) and ``Hospital-v0`` once."""
    global _HOSPITAL_LOADED
    if _HOSPITAL_LOADED:
        return
    from envs.hospital import registration

    _HOSPITAL_LOADED = True
    for short in hospital_names():
        if short not in SCENARIOS:
            register_scenario(short, _hospital_creator(short), help=f"hospital scenario {short!r}",
                              vectorized=True)
    for env_id in [*registration.IDS, registration.CONFIGURABLE_ID]:
        if env_id not in SCENARIOS:
            register_scenario(env_id, _gym_creator(env_id), help=f"gym id {env_id}",
                              vectorized=True)
    for name in ("starved", STARVED_ID):
        if name not in SCENARIOS:
            SCENARIOS.register(name, _starved_creator, help="two-group test problem (envs.starved)")


def register_scenario(name: str, creator: Callable[[dict], Any], help: str = "",
                      vectorized: bool = False) -> None:
    """Add a scenario (``creator(env_config) -> gym.Env``); idempotent for the same creator.

    ``vectorized``: ``creator({..., "num_envs": N})`` returns a batched
    ``gymnasium.vector.VectorEnv`` of N envs (see the module docstring).
    """
    if name in SCENARIOS and SCENARIOS.get(name) is creator:
        return
    SCENARIOS.register(name, creator, help=help)
    if vectorized:
        _VECTORIZED.add(name)


def names() -> list[str]:
    load_hospital_scenarios()
    return SCENARIOS.names()


def vectorized(name: str) -> bool:
    """Whether scenario ``name`` has a batched env (its creator takes ``num_envs``)."""
    load_hospital_scenarios()
    return name in _VECTORIZED


def hospital_scenarios() -> list[str]:
    """Every scenario name that builds an ``envs.hospital`` simulator (short names, gym ids,
    ``Hospital-v0``): the scenarios whose state rule-based policies can read."""
    from envs.hospital import registration

    return [*hospital_names(), *registration.IDS, registration.CONFIGURABLE_ID]


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
