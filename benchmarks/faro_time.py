"""Faro training time, violations and accuracy against the unconstrained reward model.

    python -m benchmarks.faro_time [--data synthetic|actg175|both] [--seed 0] [--threads 1]

For each preference source, trains the Bradley-Terry reward model unconstrained and under each
constraint (dp, eo, cf; ε = 0.05, FaroConfig defaults) on the same items, pairs and seed, and
prints: training seconds and the ratio to unconstrained (same run), true violations on the
training and held-out items, held-out ranking accuracy / AUC, ECE before and after the
temperature fit, and the temperature. Sources: the synthetic biased annotator
(``synthetic_preferences``) and ACTG175 outcome-based preferences with race as the group
(``envs.cohorts.preference_items`` -> ``outcome_preferences``).
"""

from __future__ import annotations

import argparse

import torch

from algorithms.faro import (
    FaroConfig,
    calibration_report,
    outcome_preferences,
    split_items,
    synthetic_preferences,
    train_faro,
    violations,
)
from envs.cohorts import preference_items

ALL = ["dp", "eo", "cf"]


def bench(name: str, data, seed: int) -> None:
    train, cal, test = split_items(data, seed=seed)
    print(f"\n{name}: {len(train.x)} train / {len(cal.x)} cal / {len(test.x)} test items, "
          f"{len(train.pairs)} train pairs")
    print(f"{'model':<6} {'sec':>6} {'x':>5} {'acc':>6} {'auc':>6} {'ece raw':>8} {'ece cal':>8} "
          f"{'temp':>5}  violations train | test (dp, eo y0, eo y1, cf)")
    base = None
    for cons in ([], ["dp"], ["eo"], ["cf"]):
        res = train_faro(train, FaroConfig(constraints=cons, seed=seed))
        base = base or res.seconds
        rep = calibration_report(res.model, cal, test)
        v_tr = violations(res.model, train, ALL)
        v_te = violations(res.model, test, ALL)
        fmt = lambda v: " ".join(f"{x:.3f}" for x in v.values())
        print(f"{'+'.join(cons) or 'none':<6} {res.seconds:>6.1f} {res.seconds / base:>5.2f} "
              f"{rep['ranking_accuracy']:>6.3f} {rep['auc']:>6.3f} {rep['ece_raw']:>8.3f} "
              f"{rep['ece_calibrated']:>8.3f} {rep['temperature']:>5.2f}  {fmt(v_tr)} | {fmt(v_te)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["synthetic", "actg175", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (tiny model: 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # first Adam imports torch._dynamo: not timed
    if args.data in ("synthetic", "both"):
        bench("synthetic (annotator bias 1.0, group = sex)", synthetic_preferences(seed=args.seed),
              args.seed)
    if args.data in ("actg175", "both"):
        bench("actg175 (outcome-based, group = race)",
              outcome_preferences(**preference_items("actg175", "race"), seed=args.seed), args.seed)


if __name__ == "__main__":
    main()
