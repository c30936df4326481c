"""Rule-based allocation policies: the reference points a trained policy must beat.

A charge nurse does not run PPO. These rules decide from the hospital's state the way simple
written protocols do, and they are evaluated exactly like trained policies (the same
evaluation seeds, the same episode metrics: :mod:`platform.allocation.evaluate`).

One registry, :data:`RULES` (name -> ``rule(decision, rng) -> action``); ``platform.train
heuristic --policy NAME`` and ``platform.sweep --baselines a,b`` look names up there and
nowhere else. A rule reads a :class:`Decision`, the state of the one decision at hand, built
from the simulator by :func:`decision_of`:

* ``fcfs`` -- first come, first served: admit to a free bed of the type the patient needs,
  otherwise defer; a new patient who finds the waiting room full is transferred out.
* ``triage`` -- severity first: a critical patient goes to ICU when an ICU bed with working
  equipment is free, else is transferred out (a critical patient does not wait); an urgent
  patient takes a free bed of the needed type, else waits; a routine patient is admitted
  only while its bed type is not under load (more than :data:`RESERVE` of those beds free)
  and waits otherwise, keeping beds for sicker arrivals.
* ``equity_triage`` -- ``triage`` with the ties broken by group: under load, a routine or
  urgent patient is admitted when its group has the longest mean wait among the groups with
  patients of that severity waiting (the patient counted), and waits otherwise. Critical
  patients are handled as in ``triage``.
* ``random`` -- one of the five actions uniformly at random (from the episode's ``rng``).

Every rule transfers instead of deferring when a new patient would find the waiting room
full (the simulator would do it anyway, with the invalid-action penalty). Rules never look
at the budget: an admission the budget cannot pay becomes a deferral in the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from base.registry import Registry
from envs.hospital.core import (
    ADMIT_GENERAL,
    ADMIT_ICU,
    ADMIT_PEDIATRIC,
    DEFER,
    N_ACTIONS,
    TRANSFER,
    HospitalCore,
)

ROUTINE, URGENT, CRITICAL = range(3)
GENERAL, ICU, PEDIATRIC = range(3)  # bed types, in BED_TYPES order
ADMIT = {GENERAL: ADMIT_GENERAL, ICU: ADMIT_ICU, PEDIATRIC: ADMIT_PEDIATRIC}
#: a bed type is "under load" when at most this share of its beds (at least one) is free
RESERVE = 0.1

Rule = Callable[["Decision", np.random.Generator], int]
RULES: Registry[Rule] = Registry("rule")


@dataclass(frozen=True)
class Decision:
    """The state a rule sees at one decision (hours, bed types in ``BED_TYPES`` order).

    ``mean_wait[s, g]``: mean hours waited so far by the patients of current severity ``s``
    and group ``g`` who wait for a bed (the queue plus the patient at hand); NaN where none.
    """

    severity: int          # current severity of the patient at hand (0 routine .. 2 critical)
    group: int             # the patient's fairness group (index into the env's group_names)
    need: int              # bed type that matches the need: ICU if critical, pediatric if a child
    free: tuple[int, ...]  # usable free beds per type (surge closures, ICU equipment down)
    beds: tuple[int, ...]  # beds per type
    from_queue: bool       # a deferred patient under review (already holds a waiting slot)
    queue_free: int        # free waiting-room slots
    wait: float            # hours the patient has waited so far
    mean_wait: np.ndarray  # (3, G)

    def under_load(self, bed: int) -> bool:
        """At most :data:`RESERVE` of the beds of type ``bed`` (and at least one) are free."""
        return self.free[bed] <= max(1, math.ceil(RESERVE * self.beds[bed]))

    def wait_or_transfer(self) -> int:
        """Defer, unless a new patient would find the waiting room full: transfer."""
        return TRANSFER if not self.from_queue and self.queue_free == 0 else DEFER

    def longest_waiting_group(self) -> bool:
        """The patient's group has the (weakly) longest mean wait at the patient's severity."""
        waits = self.mean_wait[self.severity]
        mine = waits[self.group]
        return bool(np.isnan(waits).all() or mine >= np.nanmax(waits) - 1e-9)


def decision_of(core: HospitalCore, b: int = 0) -> Decision:
    """The :class:`Decision` of hospital ``b`` of a simulator core (``env.unwrapped.core``)."""
    p = core.p
    pid = int(core.cur_pid[b])
    sev, age, group = int(p["sev"][b, pid]), int(p["age"][b, pid]), int(p["group"][b, pid])
    need = ICU if sev == CRITICAL else PEDIATRIC if age == 0 else GENERAL
    queued = core.q_pid[b][core.q_pid[b] >= 0]
    waiting = queued if core.cur_slot[b] >= 0 else np.append(queued, pid)
    total = np.zeros((3, core.G))
    count = np.zeros((3, core.G))
    np.add.at(total, (p["sev"][b, waiting], p["group"][b, waiting]),
              core.t[b] - p["arrival"][b, waiting])
    np.add.at(count, (p["sev"][b, waiting], p["group"][b, waiting]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_wait = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return Decision(
        severity=sev, group=group, need=need,
        free=tuple(int(x) for x in core.cap[b] - core.occ[b]),
        beds=tuple(int(x) for x in core.beds), from_queue=bool(core.cur_slot[b] >= 0),
        queue_free=int((core.q_pid[b] < 0).sum()),
        wait=float(core.t[b] - p["arrival"][b, pid]), mean_wait=mean_wait)


# ------------------------------------------------------------------------- the rules
@RULES.register("fcfs", help="first come, first served: a free bed of the needed type, else "
                "wait; transfer when the waiting room is full")
def fcfs(d: Decision, rng: np.random.Generator) -> int:
    if d.free[d.need] > 0:
        return ADMIT[d.need]
    return d.wait_or_transfer()


def _critical(d: Decision) -> int:
    return ADMIT_ICU if d.free[ICU] > 0 else TRANSFER


@RULES.register("triage", help="severity first: critical to ICU (else transfer), urgent to a "
                "free bed, routine waits while its beds are under load")
def triage(d: Decision, rng: np.random.Generator) -> int:
    if d.severity == CRITICAL:
        return _critical(d)
    if d.free[d.need] == 0 or (d.severity == ROUTINE and d.under_load(d.need)):
        return d.wait_or_transfer()
    return ADMIT[d.need]


@RULES.register("equity_triage", help="triage with ties broken by group: under load a bed goes "
                "to the group with the longest mean wait at that severity")
def equity_triage(d: Decision, rng: np.random.Generator) -> int:
    if d.severity == CRITICAL:
        return _critical(d)
    if d.free[d.need] == 0:
        return d.wait_or_transfer()
    if d.under_load(d.need) and not d.longest_waiting_group():
        return d.wait_or_transfer()
    return ADMIT[d.need]


@RULES.register("random", help="one of the five actions uniformly at random")
def random(d: Decision, rng: np.random.Generator) -> int:
    return int(rng.integers(N_ACTIONS))


def names() -> list[str]:
    return RULES.names()


def policy(name: str, rng: np.random.Generator) -> Callable[[object], int]:
    """``act(env) -> action`` for rule ``name`` on a single hospital env (any wrapper).

    Unknown name -> :class:`base.registry.RegistryError` listing the known rules.
    """
    rule = RULES.get(name)

    def act(env) -> int:
        return int(rule(decision_of(env.unwrapped.core, 0), rng))

    return act
