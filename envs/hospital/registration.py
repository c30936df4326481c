"""Gymnasium ids of the hospital simulators (string entry points: importing this is cheap)."""

from __future__ import annotations

import gymnasium as gym

ENTRY = "envs.hospital.env:HospitalEnv"
VECTOR_ENTRY = "envs.hospital.vector:HospitalVectorEnv"

IDS = {
    "HospitalUrban-v0": "urban",
    "HospitalRural-v0": "rural",
    "HospitalPediatric-v0": "pediatric",
    "HospitalSurge-v0": "surge",
}


def register_all() -> None:
    """Register the four presets and the configurable ``Hospital-v0`` (idempotent)."""
    for env_id, scenario in IDS.items():
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=ENTRY,
                vector_entry_point=VECTOR_ENTRY,
                kwargs={"scenario": scenario},
                disable_env_checker=False,
            )
    if "Hospital-v0" not in gym.registry:
        # gym.make("Hospital-v0", config="my_hospital.yaml" | HospitalConfig(...) | {...})
        gym.register("Hospital-v0", entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY)


register_all()
