"""Fault injection for the crash tests: ``EQUIRL_FAULT=<point>@<n>`` makes :func:`check` raise
:class:`InjectedFault` the ``n``-th time ``<point>`` is reached in this process;
``EQUIRL_FAULT=<point>@<n>:kill`` sends the process SIGKILL there instead (no handler, no
cleanup: a driver killed by the OOM killer or a lost machine), ``:stop`` SIGSTOP (a process
that hangs: alive, silent).

Points, each reached once per step of its loop:

* ``clinical.<stage>`` — the clinical driver (:func:`platform.clinical.driver.train`), before
  the stage ``rollout``, ``reward``, ``advantage``, ``update``, ``sync``, ``data`` (sft) or
  ``checkpoint`` (after the step's metrics are logged, before its checkpoint is written);
* ``rollout.generate`` — a rollout worker (:class:`platform.clinical.generation.WorkerImpl`
  actors inherit the driver's environment), before it generates; counted per worker process,
  so a restarted worker counts from 1 again;
* ``learner<rank>.update`` — a clinical learner actor of that rank, before its update;
* ``allocation.iteration`` — the allocation loop (:func:`platform.allocation.loop.iterate`),
  after an iteration's ``algo.train()``;
* ``tabular.epoch`` — the tabular FairGrad trainer, before an epoch;
* ``sweep.fit`` — the sweep driver, after its parent MLflow run started, before Tune runs.

Unset (the default) it costs one dict lookup. The tests use it to prove that a run which
fails after its MLflow run started ends FAILED with the error recorded, exits non-zero and
leaves nothing RUNNING (``tests/platform/test_crash.py``).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "EQUIRL_FAULT"
_seen: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """The error :func:`check` raises (a test asked for it)."""


def check(point: str) -> None:
    """Count a visit of ``point``; raise if ``EQUIRL_FAULT`` names this visit."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _seen[point] += 1
    name, _, at = spec.partition("@")
    at, _, action = at.partition(":")
    if name == point and _seen[point] == int(at or 1):
        if action in ("kill", "stop"):
            os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)
            return  # (after SIGCONT)
        raise InjectedFault(f"{ENV}={spec}: injected fault at {point} (visit {_seen[point]})")
