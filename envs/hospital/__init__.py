"""Hospital resource-allocation simulators for fairness-aware RL (gymnasium).

Calibrated presets of one configurable hospital (the scenario table ``SCENARIOS`` in
``config.py``; one gym id per preset, derived in ``registration``):
patients with demographic attributes arrive by a non-homogeneous Poisson process with a
daily cycle, wait for a decision (admit to a general / ICU / pediatric bed, defer, transfer
out), deteriorate while waiting, and occupy beds for a lognormal length of stay. Staff work
shifts, ICU equipment goes down for maintenance, admissions spend an operating budget, and
surge events change the load. Turnaround and length-of-stay ratios by age band are
calibrated on real data shipped in PyPI packages (``calibration.py``).

Fairness metrics follow the allocation literature: demographic parity of treatment,
equalized odds of success given treatment, individual fairness (kNN on clinical features)
and wait-time equity (1 - CV of group mean waits); see ``metrics.py`` and docs/hospital.md.

Modules: ``config`` (typed config, presets), ``core`` (batched numpy simulator), ``env``
(``HospitalEnv``), ``vector`` (``HospitalVectorEnv``), ``metrics``, ``calibration``,
``registration`` (gymnasium ids, one per preset).
"""

from __future__ import annotations

from typing import Any

from envs.hospital.config import SCENARIOS, HospitalConfig, scenario_config

__all__ = ["SCENARIOS", "HospitalConfig", "make_env", "make_vector_env", "scenario_config"]


def make_env(scenario: str, **overrides: Any):
    """A ``HospitalEnv`` for preset ``scenario`` (a key of ``SCENARIOS``) with overrides.

    Unknown scenario or bad override -> ``base.errors.ConfigError`` naming the field.
    """
    from envs.hospital.env import HospitalEnv

    return HospitalEnv(config=scenario_config(scenario, **overrides))


def make_vector_env(scenario: str, num_envs: int, **overrides: Any):
    """A ``HospitalVectorEnv`` of ``num_envs`` hospitals of preset ``scenario``."""
    from envs.hospital.vector import HospitalVectorEnv

    return HospitalVectorEnv(num_envs, config=scenario_config(scenario, **overrides))
