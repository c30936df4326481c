"""The measured effect of group-robust PPO on StarvedMinority-v0 (envs.starved): per-group
per-capita returns for λ ∈ {0, 0.25, 0.5, 1} x each robust_mode x seeds.

    .venv/bin/python -m benchmarks.robust_effect [--seeds 0,1,2] [--iterations 12]
        [--out docs/results/allocation/robust_effect]

Each cell trains with the production path (AllocationConfig -> platform.allocation.loop,
RLlib) and evaluates the greedy policy on 40 held-out episodes; λ = 0 is plain PPO whatever the
mode, so it runs once per seed. Rows are appended to ``<out>.csv`` as cells finish, and a rerun
skips the cells already there (resumable). ``<out>.md`` is rewritten from the CSV at the end:
the mean and the range over seeds per cell, and the minority's gain and the majority's share
relative to λ = 0 of the same seed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

LAMBDAS = (0.0, 0.25, 0.5, 1.0)
MODES = ("worst_group", "ggf", "gap")
FIELDS = ("mode", "lambda", "seed", "majority", "minority", "total", "seconds")
SETTINGS = dict(scenario="starved", iterations=12, num_env_runners=0, num_envs_per_env_runner=8,
                train_batch_size=1024, minibatch_size=256, num_epochs=6, lr=3e-3, gamma=0.95,
                hidden_sizes=[32, 32], eval_episodes=40, checkpoint_every=0)


def run_cell(mode: str, lam: float, seed: int, iterations: int) -> dict:
    from platform.allocation import loop
    from platform.allocation.config import AllocationConfig

    from base.config import build

    cfg = build(AllocationConfig, {**SETTINGS, "iterations": iterations, "robust_mode": mode,
                                   "robust_lambda": lam, "seed": seed})
    sink, start = loop.FinalEvaluation(), time.perf_counter()
    loop.train(cfg, sink)
    df = sink.evaluation
    return {"mode": mode if lam > 0 else "ppo", "lambda": lam, "seed": seed,
            "majority": float(df["group/majority/return_per_capita"].mean()),
            "minority": float(df["group/minority/return_per_capita"].mean()),
            "total": float(df["return"].mean()), "seconds": time.perf_counter() - start}


def cells(seeds: list[int]) -> list[tuple[str, float, int]]:
    out = [("ppo", 0.0, s) for s in seeds]
    out += [(m, lam, s) for m in MODES for lam in LAMBDAS if lam > 0 for s in seeds]
    return out


def report(rows: list[dict]) -> str:
    import numpy as np

    ppo = {int(r["seed"]): r for r in rows if r["mode"] == "ppo"}
    lines = ["# Group-robust PPO on StarvedMinority-v0: per-capita returns by group", "",
             "Regenerate: `.venv/bin/python -m benchmarks.robust_effect` (resumable). Greedy "
             "policy, 40 held-out episodes per cell; mean over seeds [min, max]. Minority gain and "
             "majority share are relative to λ = 0 (plain PPO) of the same seed.", "",
             f"Settings: {SETTINGS}", "",
             "| mode | λ | seeds | majority per capita | minority per capita | total per episode "
             "| minority gain vs PPO | majority share of PPO's |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["mode"], float(r["lambda"])), []).append(r)
    order = [("ppo", 0.0)] + [(m, lam) for m in MODES for lam in LAMBDAS if lam > 0]

    def cell(values) -> str:
        v = np.asarray(values, float)
        return f"{v.mean():+.3f} [{v.min():+.3f}, {v.max():+.3f}]"

    for key in order:
        rs = groups.get(key, [])
        if not rs:
            continue
        gain = [float(r["minority"]) - float(ppo[int(r["seed"])]["minority"]) for r in rs
                if int(r["seed"]) in ppo]
        share = [float(r["majority"]) / float(ppo[int(r["seed"])]["majority"]) for r in rs
                 if int(r["seed"]) in ppo]
        lines.append(f"| {key[0]} | {key[1]:g} | {len(rs)} | {cell([r['majority'] for r in rs])} "
                     f"| {cell([r['minority'] for r in rs])} | {cell([r['total'] for r in rs])} "
                     f"| {cell(gain)} | {cell(share)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.robust_effect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=SETTINGS["iterations"])
    p.add_argument("--out", default="docs/results/allocation/robust_effect")
    args = p.parse_args(argv)
    from platform.cluster import init_ray

    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve()  # an RLlib Algorithm may change the working directory
    path = out.with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r["mode"], float(r["lambda"]), int(r["seed"])) for r in rows}
    init_ray(num_cpus=2)
    for mode, lam, seed in cells(seeds):
        if (mode, lam, seed) in done:
            continue
        row = run_cell("worst_group" if mode == "ppo" else mode, lam, seed, args.iterations)
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        rows.append({k: str(v) for k, v in row.items()})
        print(f"{row['mode']:<12} λ={lam:<5g} seed {seed}: majority {row['majority']:+.3f} "
              f"minority {row['minority']:+.3f} ({row['seconds']:.0f} s)", flush=True)
    out.with_suffix(".md").write_text(report(rows))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
