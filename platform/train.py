"""``python -m platform.train <algorithm> [--config FILE.yaml] [--set key=value ...]``

Every trainable thing registers here by name; ``--help`` lists them without importing
RLlib, torch or DeepSpeed (entries are lazy ``"module:function"`` strings). Each entry is
``main(algorithm: str, argv: list[str]) -> int`` and parses its own options on top of the
common ones in :func:`platform.cli.add_common_train_options`.
"""

from __future__ import annotations

import sys
from platform.cli import run_main
from platform.clinical.config import ALGORITHMS as CLINICAL_ALGORITHMS

from base.errors import UsageError
from base.registry import Registry

ALGORITHMS: Registry = Registry("algorithm")

_ALLOCATION = "platform.allocation.train:main"
_CLINICAL = "platform.clinical.train:main"

ALGORITHMS.register("group-robust-ppo", _ALLOCATION,
                    help="PPO with (1-λ)·L_PPO + λ·L_robust on a hospital simulator (RLlib)")
ALGORITHMS.register("ppo", _ALLOCATION, help="RLlib PPO baseline on a hospital simulator")
ALGORITHMS.register("heuristic", "platform.allocation.heuristic:main",
                    help="a rule-based policy (--policy; its --help lists the rules) on a "
                         "hospital simulator, evaluated like a trained one")
for _name, _alg in CLINICAL_ALGORITHMS.items():  # one table: platform.clinical.config.ALGORITHMS
    ALGORITHMS.register(_name, _CLINICAL, help=_alg.help)
ALGORITHMS.register("fairgrad-classifier", "platform.tabular:main",
                    help="MLP on a real cohort with and without FairGrad gradient projection")

USAGE = "python -m platform.train <algorithm> [--config FILE.yaml] [--set key=value ...] [options]"


def _help() -> str:
    width = max(len(n) for n in ALGORITHMS.names())
    lines = [f"usage: {USAGE}", "", "Train a fairness-aware policy; results go to MLflow.", "",
             "algorithms:"]
    lines += [f"  {n.ljust(width)}  {ALGORITHMS.help(n)}" for n in ALGORITHMS.names()]
    lines += ["", "`python -m platform.train <algorithm> --help` lists that algorithm's options."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name.startswith("-"):
        raise UsageError(f"the first argument must be an algorithm; known: {', '.join(ALGORITHMS.names())}")
    if name not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS.names())}")
    return ALGORITHMS.get(name)(name, rest)


if __name__ == "__main__":
    sys.exit(run_main(main))
