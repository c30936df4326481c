"""Hospital env throughput: one env, SyncVectorEnv over 64 singles, the batched vector env.

    .venv/bin/python -m benchmarks.env_throughput [--scenario urban] [--seconds 3] [--num-envs 64]

Prints decisions/s for each, patients simulated per second (arrivals) for the batched env,
and the batched / SyncVectorEnv ratio (target >= 10x). Random actions, fixed seeds; all
figures come from this one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from envs.hospital.registration import IDS


def _timed(step, reset, seconds: float) -> tuple[int, float]:
    """Call ``step()`` until ``seconds`` have passed; returns (calls, elapsed)."""
    reset()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            step()
        n += 50
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed


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

    n, el = _timed(step, lambda: env.reset(seed=0), seconds)
    return {"decisions_per_s": n / el}


def vector(env_id: str, num_envs: int, mode: str, seconds: float) -> dict[str, float]:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, (1000, num_envs))
    state = {"i": 0}

    def step():
        state["i"] += 1
        env.step(acts[state["i"] % 1000])

    n, el = _timed(step, lambda: env.reset(seed=0), seconds)
    out = {"decisions_per_s": n * num_envs / el}
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
    res = {
        "single": single(env_id, a.seconds),
        f"sync_vector_x{a.num_envs}": vector(env_id, a.num_envs, "sync", a.seconds),
        f"batched_x{a.num_envs}": vector(env_id, a.num_envs, "vector_entry_point", a.seconds),
    }
    sync = res[f"sync_vector_x{a.num_envs}"]["decisions_per_s"]
    batched = res[f"batched_x{a.num_envs}"]["decisions_per_s"]
    res["ratio_batched_over_sync"] = batched / sync
    if a.json:
        print(json.dumps(res))
    else:
        print(f"scenario {a.scenario}, {a.num_envs} envs, {a.seconds:.1f} s per measurement")
        print(
            f"  single env                : {res['single']['decisions_per_s']:>12,.0f} decisions/s"
        )
        print(f"  SyncVectorEnv x{a.num_envs:<3}       : {sync:>12,.0f} decisions/s")
        print(f"  batched HospitalVectorEnv : {batched:>12,.0f} decisions/s")
        pps = res[f"batched_x{a.num_envs}"]["patients_per_s"]
        print(f"  batched patients simulated: {pps:>12,.0f} patients/s")
        print(
            f"  ratio batched / sync      : {res['ratio_batched_over_sync']:>12.1f}x (target >= 10x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
