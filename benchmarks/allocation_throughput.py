"""Training throughput of the allocation track: the batched simulator inside RLlib, one run.

    .venv/bin/python -m benchmarks.allocation_throughput [--scenario urban] [--iterations 4]
        [--set key=value ...] [--json out.json]

Three configs of ``platform.allocation`` (group-robust PPO, λ = 0.3), built side by side and
trained in alternating iterations (A B C A B C ...) so that load from other jobs on the
machine hits all three alike; the first iteration of each is a warm-up and is not timed:

* ``default``: ``AllocationConfig``'s defaults (what ``platform.train``, ``platform.sweep``
  and ``make run`` use): the scenario's batched numpy env (``HospitalVectorEnv`` through
  RLlib's ``gym_env_vectorize_mode="vector_entry_point"``);
* ``sync``: the same config with ``env_vectorize=sync`` (gymnasium's ``SyncVectorEnv`` of
  single ``HospitalEnv`` s);
* ``single``: the defaults before the batched env (:data:`TODAY`): one remote env runner,
  one env, 1000 env steps per iteration, minibatch 128.

Reported per config: env steps/s over whole training iterations (sampling + learning, wall
clock), the median seconds per iteration, of which the learner update (timed around
``learner_group.update``) and the rest (sampling, metrics), and the ratios default / sync
(target >= 5) and default / single (target >= 10). ``--set`` changes a field
of the default (and so of ``sync``) config, e.g. ``--set num_envs_per_env_runner=32``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

#: the allocation defaults before issue 14 (one env runner, one single env, small batches)
TODAY: dict[str, Any] = {"num_env_runners": 1, "num_envs_per_env_runner": 1,
                         "env_vectorize": "sync", "train_batch_size": 1000,
                         "minibatch_size": 128, "num_epochs": 5}
TARGETS = {"sync": 5.0, "single": 10.0}


def configs(scenario: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The three configs (validated AllocationConfigs), evaluation off."""
    from platform.allocation.config import AllocationConfig

    from base.config import build

    common = {"scenario": scenario, "seed": 0, "eval_episodes": 0, "checkpoint_every": 0}
    default = build(AllocationConfig, {**common, **overrides})
    return {"default": default, "sync": default.replace(env_vectorize="sync"),
            "single": build(AllocationConfig, {**common, **TODAY})}


def _timed_updates(algo) -> list[float]:
    """Wrap the algorithm's learner-group update so that each call's wall time is recorded
    (RLlib's own timers are moving averages that keep the warm-up in them)."""
    times: list[float] = []
    update = algo.learner_group.update

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    algo.learner_group.update = timed
    return times


def measure(cfgs: dict[str, Any], iterations: int) -> dict[str, dict[str, float]]:
    from platform.allocation import rllib
    from platform.allocation.loop import build_algo

    import torch

    algos = {name: build_algo(cfg) for name, cfg in cfgs.items()}
    try:
        for algo in algos.values():  # warm-up (env creation, first forward passes)
            algo.train()
        updates = {name: _timed_updates(algo) for name, algo in algos.items()}
        steps = dict.fromkeys(algos, 0.0)
        seconds: dict[str, list[float]] = {k: [] for k in algos}
        for _ in range(iterations):
            for name, algo in algos.items():
                torch.set_num_threads(cfgs[name].torch_threads)  # process-wide: per config
                start = time.perf_counter()
                result = algo.train()
                seconds[name].append(time.perf_counter() - start)
                steps[name] += rllib.env_steps_this_iter(result)
    finally:
        for algo in algos.values():
            algo.stop()
    out = {}
    for k in algos:
        learn = statistics.median(updates[k])
        out[k] = {"env_steps": steps[k], "seconds": sum(seconds[k]),
                  "env_steps_per_s": steps[k] / sum(seconds[k]),
                  "iteration_s": statistics.median(seconds[k]), "learn_s": learn,
                  "sample_s": statistics.median(seconds[k]) - learn}
    return out


def _describe(cfg) -> str:
    return (f"{cfg.num_env_runners} runner(s) x {cfg.num_envs_per_env_runner} env(s) "
            f"[{cfg.vectorize_mode}], batch {cfg.train_batch_size}, minibatch "
            f"{cfg.minibatch_size}, {cfg.num_epochs} epochs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.allocation_throughput",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="urban")
    p.add_argument("--iterations", type=int, default=4, help="timed iterations per config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the default config (repeatable)")
    p.add_argument("--cpus", type=int, default=2,
                   help="logical CPUs given to the local Ray (at least one per remote env runner "
                        "of the three configs plus one)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)

    from platform.cluster import init_ray

    from base.config import merge_sources

    cfgs = configs(args.scenario, merge_sources(None, args.overrides))
    init_ray(num_cpus=max(args.cpus, 1 + sum(c.num_env_runners for c in cfgs.values())))
    figures = measure(cfgs, args.iterations)
    load = os.getloadavg()[0]
    print(f"\n{args.scenario}: group-robust PPO (λ {cfgs['default'].robust_lambda}), "
          f"{args.iterations} timed iterations per config, alternating; load average "
          f"{load:.1f} on {os.cpu_count()} CPUs")
    print(f"  {'config':8s}{'env steps/s':>13s}{'s/iteration':>13s}{'learn s':>9s}"
          f"{'other s':>9s}  setup")
    for name, f in figures.items():
        print(f"  {name:8s}{f['env_steps_per_s']:>13,.0f}{f['iteration_s']:>13.2f}"
              f"{f['learn_s']:>9.2f}{f['sample_s']:>9.2f}  {_describe(cfgs[name])}")
    ratios = {k: figures["default"]["env_steps_per_s"] / figures[k]["env_steps_per_s"]
              for k in TARGETS}
    ok = True
    for k, target in TARGETS.items():
        met = ratios[k] >= target
        ok &= met
        print(f"  default / {k:6s} {ratios[k]:6.1f}x   (target >= {target:g}x: "
              f"{'met' if met else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"scenario": args.scenario, "iterations": args.iterations,
                       "load_average_1min": load, "figures": figures, "ratios": ratios,
                       "configs": {k: _describe(c) for k, c in cfgs.items()}}, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
