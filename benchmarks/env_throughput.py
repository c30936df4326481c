"""Hospital env throughput: one env, SyncVectorEnv over 64 singles, the batched vector env.

    .venv/bin/python -m benchmarks.env_throughput [--scenario urban] [--seconds 3] [--num-envs 64]

Prints decisions/s for each, patients simulated per second (arrivals) for the batched env,
and the batched / SyncVectorEnv ratio (target >= 10x). Random actions, fixed seeds; all
figures come from this one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from envs.hospital.registration import IDS


def _timed(step, reset, seconds: float) -> tuple[int, float, float]:
    """Call ``step()`` until ``seconds`` have passed; returns (calls, wall s, CPU s).

    CPU seconds (this process) are less sensitive to other jobs sharing the machine.
    """
    reset()
    n, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        for _ in range(50):
            step()
        n += 50
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed, time.process_time() - cpu0


def single(env_id: str, seconds: float) -> dict[str, float]:
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, 100_000)
    state = {"i": 0}

    def step():
        i = state["i"] = state["i"] + 1
        *_, trunc, _ = env.step(int(acts[i % acts.size]))
        if trunc:
            env.reset()

    n, el, cpu = _timed(step, lambda: env.reset(seed=0), seconds)
    return {"decisions_per_s": n / el, "decisions_per_cpu_s": n / cpu}


def vector(env_id: str, num_envs: int, mode: str, seconds: float) -> dict[str, float]:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, (1000, num_envs))
    state = {"i": 0}

    def step():
        state["i"] += 1
        env.step(acts[state["i"] % 1000])

    n, el, cpu = _timed(step, lambda: env.reset(seed=0), seconds)
    out = {"decisions_per_s": n * num_envs / el, "decisions_per_cpu_s": n * num_envs / cpu}
    core = getattr(env, "core", None)
    if core is not None:  # arrivals in the current episodes, a lower bound over the run
        out["patients_per_s"] = _patients_per_s(env, acts, seconds)
    return out


def _patients_per_s(env, acts: np.ndarray, seconds: float) -> float:
    """Arrivals simulated per second, counted exactly over whole-episode runs."""
    env.reset(seed=1)
    core = env.core
    total, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        before = core.count["arrived"].copy()
        env.step(acts[i % 1000])
        i += 1
        after = core.count["arrived"]
        # on reset steps the counter restarts at 1 (the first patient of the new episode)
        total += int(np.where(after >= before, after - before, after).sum())
    return total / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="urban", choices=sorted(IDS.values()))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    a = p.parse_args(argv)
    env_id = {v: k for k, v in IDS.items()}[a.scenario]
    n = a.num_envs
    res = {
        "single": single(env_id, a.seconds),
        f"sync_vector_x{n}": vector(env_id, n, "sync", a.seconds),
        f"batched_x{n}": vector(env_id, n, "vector_entry_point", a.seconds),
    }
    sync, batched = res[f"sync_vector_x{n}"], res[f"batched_x{n}"]
    res["ratio_batched_over_sync"] = batched["decisions_per_s"] / sync["decisions_per_s"]
    res["ratio_batched_over_sync_cpu"] = (
        batched["decisions_per_cpu_s"] / sync["decisions_per_cpu_s"]
    )
    res["load_average_1min"] = os.getloadavg()[0]
    if a.json:
        print(json.dumps(res))
        return 0
    print(
        f"scenario {a.scenario}, {n} envs, {a.seconds:.1f} s per measurement, "
        f"load average {res['load_average_1min']:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  {'':32s}{'decisions/s':>14s}{'per CPU-second':>16s}")
    rows = [
        ("single env", res["single"]),
        (f"SyncVectorEnv x{n}", sync),
        (f"batched HospitalVectorEnv x{n}", batched),
    ]
    for label, r in rows:
        print(f"  {label:32s}{r['decisions_per_s']:>14,.0f}{r['decisions_per_cpu_s']:>16,.0f}")
    print(f"  {'batched patients simulated/s':32s}{batched['patients_per_s']:>14,.0f}")
    print(
        f"  {'ratio batched / sync':32s}{res['ratio_batched_over_sync']:>13.1f}x"
        f"{res['ratio_batched_over_sync_cpu']:>15.1f}x   (target >= 10x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
