"""Environments: gymnasium hospital-allocation simulators (``envs.hospital``) and the
clinical diagnosis environment (``envs.clinical``, imported on demand).

``import envs`` registers the hospital ids (HospitalUrban-v0, HospitalRural-v0,
HospitalPediatric-v0, HospitalSurge-v0, Hospital-v0) and ``StarvedMinority-v0``
(``envs.starved``: the two-group test problem of the group-robust objectives), and nothing
heavier.
"""

import gymnasium as _gym

import envs.hospital.registration  # noqa: F401  (registers the gymnasium ids)

if "StarvedMinority-v0" not in _gym.registry:
    _gym.register("StarvedMinority-v0", entry_point="envs.starved:StarvedMinorityEnv")
