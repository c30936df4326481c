"""Typed hospital configuration and the four scenario presets.

``HospitalConfig`` is validated on construction (``__post_init__``): a bad field raises
``base.errors.ConfigError`` naming it, before any simulator state exists, so an env is
never half-built. ``HospitalConfig.from_yaml`` / ``from_dict`` accept partial mappings
(missing fields keep their defaults; nested sections may be partial too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.config import build, deep_merge, load_yaml, option
from base.errors import ConfigError, require

BED_TYPES = ("general", "icu", "pediatric")
SEVERITIES = ("routine", "urgent", "critical")
ATTRIBUTES = {
    "age_group": ("pediatric", "adult", "elderly"),
    "sex": ("female", "male"),
    "insurance": ("private", "public", "uninsured"),
}


def _check_shares(values: dict[str, float]) -> None:
    """Each share in [0, 1] (field names relative to the section, e.g. ``pediatric``)."""
    for k, v in values.items():
        require(0.0 <= v <= 1.0, k, f"must be in [0, 1], got {v}")


def _sum_to_one(field_name: str, values: dict[str, float]) -> None:
    total = sum(values.values())
    require(
        abs(total - 1.0) < 1e-6,
        field_name,
        f"proportions must sum to 1, got {total:.6g} ({', '.join(f'{k}={v}' for k, v in values.items())})",
    )


@dataclass
class Beds:
    """Bed counts per type; each must be >= 0 and the total >= 1."""

    general: int = option(90, "general beds")
    icu: int = option(15, "icu beds")
    pediatric: int = option(15, "pediatric beds")

    def __post_init__(self) -> None:
        for k in BED_TYPES:
            require(getattr(self, k) >= 0, k, f"bed count must be >= 0, got {getattr(self, k)}")
        require(self.total() >= 1, "general", "at least one bed is needed in total")

    def total(self) -> int:
        return self.general + self.icu + self.pediatric


@dataclass
class StaffMix:
    """Share of staff specialised in each bed type (sums to 1)."""

    general: float = option(0.7, "share of staff specialised in general beds")
    icu: float = option(0.15, "share of staff specialised in icu beds")
    pediatric: float = option(0.15, "share of staff specialised in pediatric beds")

    def __post_init__(self) -> None:
        _check_shares(dataclasses.asdict(self))


@dataclass
class AgeMix:
    """Share of arrivals per age group (sums to 1)."""

    pediatric: float = option(0.25, "share of pediatric arrivals")
    adult: float = option(0.45, "share of adult arrivals")
    elderly: float = option(0.30, "share of elderly arrivals")

    def __post_init__(self) -> None:
        _check_shares(dataclasses.asdict(self))


@dataclass
class SeverityMix:
    """Share of arrivals per severity (clinical need, independent of demographics)."""

    routine: float = option(0.60, "share of routine arrivals")
    urgent: float = option(0.25, "share of urgent arrivals")
    critical: float = option(0.15, "share of critical arrivals")

    def __post_init__(self) -> None:
        _check_shares(dataclasses.asdict(self))


@dataclass
class InsuranceMix:
    """Share of arrivals per insurance / socioeconomic class."""

    private: float = option(0.55, "share of arrivals with private insurance")
    public: float = option(0.35, "share of arrivals with public insurance")
    uninsured: float = option(0.10, "share of arrivals with uninsured insurance")

    def __post_init__(self) -> None:
        _check_shares(dataclasses.asdict(self))


@dataclass
class Rewards:
    """Reward weights (see the env docstring, section Rewards)."""

    success: tuple[float, float, float] = option(
        (1.0, 2.0, 4.0), "reward for a successful outcome, per severity (routine, urgent, critical)"
    )
    death: float = option(
        5.0, "penalty per death (in the queue or after a failed critical treatment)"
    )
    deterioration: float = option(0.5, "penalty per deterioration of a waiting patient")
    wait_per_hour: float = option(
        0.02, "penalty per severity-weighted (1, 2, 4) patient-hour in the queue"
    )
    cost: float = option(
        0.05, "penalty per unit of operating cost (bed-hours x cost rate, transfers)"
    )
    invalid: float = option(
        0.1, "penalty for an admission that is impossible (no bed / no budget) or a full queue"
    )
    transfer_credit: float = option(
        0.5, "share of the success reward credited when a transferred patient does well"
    )

    def __post_init__(self) -> None:
        require(
            len(self.success) == 3, "rewards.success", "needs 3 values (routine, urgent, critical)"
        )
        for name in (
            "death",
            "deterioration",
            "wait_per_hour",
            "cost",
            "invalid",
            "transfer_credit",
        ):
            require(getattr(self, name) >= 0, f"rewards.{name}", "must be >= 0")


@dataclass
class HospitalConfig:
    """One hospital. Every field is declared with its doc (``base.config.option``); times are
    in hours. The field table in docs/hospital.md is generated from these declarations."""

    name: str = option("custom", "scenario name (free text, shown in metrics)")
    beds: Beds = option(Beds, "bed counts per type")
    staff: int = option(80, "total staff headcount, spread over three 8-hour shifts")
    staff_mix: StaffMix = option(StaffMix, "specialisation shares of the staff")
    shift_shares: tuple[float, float, float] = option(
        (0.40, 0.35, 0.25),
        "share of staff on the day (07-15), evening (15-23) and night (23-07) shift",
    )
    age_mix: AgeMix = option(
        AgeMix, "share of arrivals per age group (pediatric, adult, elderly; sums to 1)"
    )
    severity_mix: SeverityMix = option(
        SeverityMix,
        "share of arrivals per severity (clinical need, independent of demographics; sums to 1)",
    )
    female_share: float = option(0.5, "share of female arrivals")
    insurance_mix: InsuranceMix = option(
        InsuranceMix,
        "share of arrivals per insurance class (private, public, uninsured; sums to 1)",
    )
    group_key: str = option(
        "age_group",
        "fairness groups: an attribute or a '+' intersection of age_group, sex, insurance",
    )
    arrival_rate: float = option(
        2.5, "mean arrivals per hour (non-homogeneous Poisson, daily cycle)"
    )
    daily_amplitude: float = option(
        0.5, "relative amplitude of the daily arrival cycle (0 = homogeneous, < 1)"
    )
    peak_hour: float = option(14.0, "hour of the day with the highest arrival rate")
    transport_hours: float = option(0.5, "transport time to the receiving hospital on transfer out")
    turnaround_cap_hours: float = option(
        24.0,
        "diagnostic turnaround is capped here (the data's elderly tail is long; medians unaffected)",
    )
    los_base_hours: float = option(
        24.0,
        "median length of stay of a routine adult (scaled by calibrated severity / age ratios)",
    )
    los_pediatric_ratio: float = option(
        0.8, "pediatric/adult LOS ratio (assumption: not in the shipped data)"
    )
    equipment: int = option(
        17, "ICU equipment units (monitors/ventilators); an ICU bed needs one that is up"
    )
    maintenance_every_hours: float = option(
        72.0, "each unit goes down for maintenance once per this period (staggered)"
    )
    maintenance_hours: float = option(4.0, "maintenance downtime per unit")
    budget: float = option(3000.0, "operating budget per episode (cost units)")
    bed_cost_per_hour: tuple[float, float, float] = option(
        (0.05, 0.25, 0.08),
        "cost per bed-hour (general, icu, pediatric); an admission commits its whole stay",
    )
    transfer_cost: float = option(1.0, "cost of one transfer out")
    surge_per_day: float = option(0.0, "expected surge events per day (0 = none)")
    surge_hours: float = option(8.0, "duration of a surge event")
    surge_arrival_mult: float = option(2.0, "arrival-rate multiplier during a surge")
    surge_capacity_mult: float = option(
        0.8, "share of beds usable during a surge (staff absent, beds closed)"
    )
    initial_occupancy: float = option(0.75, "share of beds occupied by earlier patients at reset")
    queue_capacity: int = option(
        32, "waiting-room slots; deferring into a full queue transfers the patient out"
    )
    max_decisions: int = option(400, "episode length in decisions (truncation)")
    rewards: Rewards = option(Rewards, "reward weights (the env docstring's Rewards section)")

    def __post_init__(self) -> None:
        require(self.staff >= 1, "staff", f"must be >= 1, got {self.staff}")
        for section in ("age_mix", "severity_mix", "insurance_mix", "staff_mix"):
            _sum_to_one(section, dataclasses.asdict(getattr(self, section)))
        _sum_to_one("shift_shares", dict(zip(("day", "evening", "night"), self.shift_shares)))
        require(0 <= self.female_share <= 1, "female_share", "must be in [0, 1]")
        parts = self.group_key.split("+")
        for p in parts:
            require(
                p in ATTRIBUTES,
                "group_key",
                f"unknown attribute {p!r}; allowed: {', '.join(ATTRIBUTES)} or '+' intersections",
            )
        require(len(set(parts)) == len(parts), "group_key", "an attribute appears twice")
        require(self.arrival_rate >= 1e-3, "arrival_rate", "must be >= 0.001 (patients per hour)")
        require(0 <= self.daily_amplitude < 1, "daily_amplitude", "must be in [0, 1)")
        require(self.transport_hours >= 0, "transport_hours", "must be >= 0")
        require(self.turnaround_cap_hours > 0, "turnaround_cap_hours", "must be > 0")
        require(self.los_base_hours > 0, "los_base_hours", "must be > 0")
        require(self.los_pediatric_ratio > 0, "los_pediatric_ratio", "must be > 0")
        require(self.equipment >= 0, "equipment", "must be >= 0")
        require(self.maintenance_every_hours > 0, "maintenance_every_hours", "must be > 0")
        require(
            0 <= self.maintenance_hours < self.maintenance_every_hours,
            "maintenance_hours",
            "must be in [0, maintenance_every_hours)",
        )
        require(self.budget > 0, "budget", "must be > 0")
        require(len(self.bed_cost_per_hour) == 3, "bed_cost_per_hour", "needs 3 values")
        require(min(self.bed_cost_per_hour) >= 0, "bed_cost_per_hour", "must be >= 0")
        require(self.transfer_cost >= 0, "transfer_cost", "must be >= 0")
        require(
            self.surge_per_day == 0 or self.surge_per_day >= 1e-3,
            "surge_per_day",
            "must be 0 (no surges) or >= 0.001",
        )
        require(self.surge_hours > 0, "surge_hours", "must be > 0")
        require(self.surge_arrival_mult >= 1, "surge_arrival_mult", "must be >= 1")
        require(0 < self.surge_capacity_mult <= 1, "surge_capacity_mult", "must be in (0, 1]")
        require(0 <= self.initial_occupancy <= 1, "initial_occupancy", "must be in [0, 1]")
        require(1 <= self.queue_capacity <= 1024, "queue_capacity", "must be in [1, 1024]")
        require(
            1 <= self.max_decisions <= 100_000,
            "max_decisions",
            f"episode length must be >= 1 decision, got {self.max_decisions}",
        )

    # -- groups -----------------------------------------------------------------------
    @property
    def group_attributes(self) -> tuple[str, ...]:
        return tuple(self.group_key.split("+"))

    @property
    def group_names(self) -> tuple[str, ...]:
        """Group index -> name; intersections are '-'-joined in mixed-radix order."""
        names = [""]
        for attr in self.group_attributes:
            names = [f"{n}-{v}" if n else v for n in names for v in ATTRIBUTES[attr]]
        return tuple(names)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: dict[str, Any] | None, base: HospitalConfig | None = None
    ) -> HospitalConfig:
        """Partial mapping merged over ``base`` (default: the defaults), validated."""
        start = dataclasses.asdict(base) if base is not None else {}
        return build(cls, deep_merge(start, dict(data or {})))

    @classmethod
    def from_yaml(cls, path: str | Path) -> HospitalConfig:
        """Read a YAML mapping. A ``scenario: <name>`` key starts from that preset."""
        data = load_yaml(path)
        scenario = data.pop("scenario", None)
        base = scenario_config(scenario) if scenario is not None else None
        return cls.from_dict(data, base)


# The scenario table: the one place a hospital scenario is defined (partial overrides of
# the defaults). A new entry gets its gym id (registration.gym_id: Hospital<Name>-v0),
# becomes a --scenario of platform.train / platform.sweep (platform.allocation.scenarios)
# and is covered by the env contract tests (tests/envs/hospital over registration.IDS).
_PRESETS: dict[str, dict[str, Any]] = {
    "urban": {
        "name": "urban",
        "beds": {"general": 90, "icu": 15, "pediatric": 15},
        "staff": 80,
        "age_mix": {"pediatric": 0.25, "adult": 0.45, "elderly": 0.30},
        "arrival_rate": 2.5,
        "transport_hours": 0.5,
        "equipment": 17,
        "budget": 3000.0,
    },
    "rural": {
        "name": "rural",
        "beds": {"general": 32, "icu": 4, "pediatric": 4},
        "staff": 25,
        "staff_mix": {"general": 0.8, "icu": 0.12, "pediatric": 0.08},
        "age_mix": {"pediatric": 0.15, "adult": 0.45, "elderly": 0.40},
        "arrival_rate": 0.8,
        "transport_hours": 3.0,
        "equipment": 5,
        "budget": 1200.0,
    },
    "pediatric": {
        "name": "pediatric",
        "beds": {"general": 15, "icu": 10, "pediatric": 35},
        "staff": 45,
        "staff_mix": {"general": 0.25, "icu": 0.15, "pediatric": 0.60},
        "age_mix": {"pediatric": 0.75, "adult": 0.20, "elderly": 0.05},
        "arrival_rate": 1.3,
        "transport_hours": 1.0,
        "equipment": 12,
        "budget": 1800.0,
    },
    "surge": {
        "name": "surge",
        "beds": {"general": 70, "icu": 20, "pediatric": 10},
        "staff": 70,
        "severity_mix": {"routine": 0.45, "urgent": 0.25, "critical": 0.30},
        "arrival_rate": 2.2,
        "surge_per_day": 1.0,
        "surge_hours": 8.0,
        "surge_arrival_mult": 2.0,
        "surge_capacity_mult": 0.8,
        "transport_hours": 0.75,
        "equipment": 22,
        "budget": 3500.0,
    },
}

SCENARIOS: dict[str, HospitalConfig] = {k: HospitalConfig.from_dict(v) for k, v in _PRESETS.items()}
"""Short scenario name -> validated preset config."""


def scenario_config(scenario: str, **overrides: Any) -> HospitalConfig:
    """Preset ``scenario`` with ``overrides`` (nested sections may be partial dicts)."""
    if scenario not in SCENARIOS:
        raise ConfigError(
            "scenario", f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}"
        )
    return HospitalConfig.from_dict(overrides, SCENARIOS[scenario])
