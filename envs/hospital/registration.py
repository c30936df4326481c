"""Gymnasium ids of the hospital simulators, derived from the scenario table.

Every preset of ``envs.hospital.config.SCENARIOS`` gets the id ``Hospital<Name>-v0``
(:func:`gym_id`: ``rural`` -> ``HospitalRural-v0``, ``icu_heavy`` -> ``HospitalIcuHeavy-v0``);
``Hospital-v0`` is the configurable hospital. Entry points are strings, so importing this is
cheap.
"""

from __future__ import annotations

import gymnasium as gym

from envs.hospital.config import SCENARIOS

ENTRY = "envs.hospital.env:HospitalEnv"
VECTOR_ENTRY = "envs.hospital.vector:HospitalVectorEnv"
CONFIGURABLE_ID = "Hospital-v0"


def gym_id(scenario: str) -> str:
    """``rural`` -> ``HospitalRural-v0`` (snake_case parts capitalised and joined)."""
    return "Hospital" + "".join(part.capitalize() for part in scenario.split("_")) + "-v0"


IDS: dict[str, str] = {gym_id(name): name for name in SCENARIOS}
"""Gym id -> scenario name, one per preset in the table."""


def register_all() -> None:
    """Register every preset and the configurable ``Hospital-v0`` (idempotent)."""
    for env_id, scenario in IDS.items():
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=ENTRY,
                vector_entry_point=VECTOR_ENTRY,
                kwargs={"scenario": scenario},
                disable_env_checker=False,
            )
    if CONFIGURABLE_ID not in gym.registry:
        # gym.make("Hospital-v0", config="my_hospital.yaml" | HospitalConfig(...) | {...})
        gym.register(CONFIGURABLE_ID, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY)


register_all()
