"""Environments: gymnasium hospital-allocation simulators (``envs.hospital``) and the
clinical diagnosis environment (``envs.clinical``, imported on demand).

``import envs`` registers the hospital ids (HospitalUrban-v0, HospitalRural-v0,
HospitalPediatric-v0, HospitalSurge-v0, Hospital-v0) and nothing heavier.
"""

import envs.hospital.registration  # noqa: F401  (registers the gymnasium ids)
