"""Sweep parallel efficiency: 4 trials run concurrently vs 4 × one trial, same Ray instance.

    .venv/bin/python -m benchmarks.sweep_efficiency [--iterations 2] [--cpus 4] [--repeats 1]

Runs ``platform.sweep.run_sweep`` (real Tune + RLlib group-robust PPO + MLflow callback) on
one scenario with 4 trials (λ ∈ {0, 0.3} × 2 seeds): once as one 4-trial grid (concurrency
bounded by the Ray CPUs, ``--cpus``), and once as 4 one-trial sweeps in a row. Prints the
wall times, speedup = T(4 × 1) / T(4 concurrent), and parallel efficiency = speedup /
min(4, physical cores). Everything goes to a temp dir (MLflow store, Tune storage).
Timings are only comparable on an otherwise idle machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _spec(S, name: str, lambdas, seeds, iterations: int):
    base = {"iterations": iterations, "train_batch_size": 1000, "minibatch_size": 250,
            "num_epochs": 2, "eval_episodes": 2, "num_env_runners": 0, "checkpoint_every": 0}
    return S.SweepSpec(algorithm="group-robust-ppo", scenarios=["rural"], lambdas=list(lambdas),
                       seeds=list(seeds), base=base, name=name, experiment="bench")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--cpus", type=int, default=4, help="logical CPUs given to Ray (trials at once)")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sweep_bench_"))
    os.environ["EQUIRL_STORAGE"] = str(tmp / "ray_results")
    from platform import sweep as S
    from platform import tracking
    from platform.cluster import init_ray

    init_ray(num_cpus=a.cpus)
    uri, exp_id = tracking.setup(f"sqlite:///{tmp / 'mlflow.db'}", "bench")
    grid = [(lam, seed) for lam in (0.0, 0.3) for seed in (0, 1)]

    # warm-up: imports, env registration, first RLlib build in the workers
    S.run_sweep(_spec(S, "warmup", [0.0], [9], 1), uri=uri, exp_id=exp_id)

    t0 = time.perf_counter()
    S.run_sweep(_spec(S, "serial-0", [grid[0][0]], [grid[0][1]], a.iterations), uri=uri, exp_id=exp_id)
    for i, (lam, seed) in enumerate(grid[1:], start=1):
        S.run_sweep(_spec(S, f"serial-{i}", [lam], [seed], a.iterations), uri=uri, exp_id=exp_id)
    serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = S.run_sweep(_spec(S, "concurrent", [0.0, 0.3], [0, 1], a.iterations), uri=uri,
                      exp_id=exp_id, max_concurrent_trials=4)
    concurrent = time.perf_counter() - t0
    assert res["errors"] == 0, res

    cores = len(os.sched_getaffinity(0))
    speedup = serial / concurrent
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f}; Ray CPUs {a.cpus}; "
          f"{a.iterations} iterations x 1000 env steps per trial")
    print(f"4 x 1 trial (sequential sweeps): {serial:7.1f} s")
    print(f"4 trials concurrently (1 sweep): {concurrent:7.1f} s")
    print(f"speedup {speedup:.2f}x; parallel efficiency {speedup / min(4, cores):.0%} "
          f"of {min(4, cores)} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
