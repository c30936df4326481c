"""``python -m platform.train heuristic --policy triage --scenario rural``: a rule as a baseline.

Stages: config (:func:`parse_args`: ``HeuristicConfig``; a training option is refused, exit 2)
-> tracking -> evaluation (:func:`platform.allocation.evaluate.evaluate_rule`: the same
seeds, rows and ``eval/...`` metrics as a trained run's final evaluation) -> one FINISHED
MLflow run tagged ``equirl.algorithm=heuristic``, ``equirl.policy=<rule>``. No Ray: a rule is
not trained.
"""

from __future__ import annotations

import argparse
from platform import cli
from platform.allocation.config import HeuristicConfig, training_only_fields
from typing import Any

from base import config as config_lib
from base.errors import UsageError

TRACK = "allocation"
FLAGS = {"seed": "seed", "policy": "policy", "scenario": "scenario", "group_key": "group_key",
         "run_name": "run_name"}
# platform.train options of the trained algorithms that mean nothing for a rule
TRAINING_FLAGS = {"iterations": "--iterations", "robust_lambda": "--lambda",
                  "robust_mode": "--mode", "num_env_runners": "--num-env-runners",
                  "resume": "--resume"}


def parse_args(argv: list[str]) -> tuple[HeuristicConfig, argparse.Namespace]:
    """``argv`` -> ``(HeuristicConfig, namespace)``; bad input -> UsageError (exit 2)."""
    from platform.allocation import scenarios

    from envs.hospital import rules

    p = cli.parser("python -m platform.train heuristic",
                   "Evaluate a rule-based allocation policy on the evaluation seeds of a trained "
                   "run; one MLflow run.\nPrecedence: defaults < --config < --set < flags.",
                   HeuristicConfig)
    g = cli.add_config_options(p)
    g.add_argument("--seed", type=int, default=None, help="seed of the rule's randomness")
    cli.add_tracking_options(g)
    h = p.add_argument_group("heuristic options")
    h.add_argument("--policy", help=f"one of: {', '.join(rules.names())}")
    h.add_argument("--scenario", help=f"one of: {', '.join(scenarios.hospital_scenarios())}")
    h.add_argument("--group-key", dest="group_key", help="e.g. age_group or age_group+sex")
    h.add_argument("--run-name", dest="run_name", help="MLflow run name")
    for dest, flag in TRAINING_FLAGS.items():  # accepted by the parser only to be refused
        kind = {"action": "store_true"} if dest == "resume" else {}
        p.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS, **kind)
    args = p.parse_args(argv)
    given = [flag for dest, flag in TRAINING_FLAGS.items() if getattr(args, dest)]
    if given:
        raise UsageError(f"{given[0]}: a training option; a rule-based policy is not trained "
                         "(heuristic takes --policy, --scenario, --group-key, --seed, --run-name, "
                         "--config, --set, --tracking-uri, --experiment)")
    refuse_training_fields(config_lib.merge_sources(args.config, args.overrides))
    return cli.config_from_args(HeuristicConfig, args, FLAGS), args


def refuse_training_fields(given: dict[str, Any]) -> None:
    """UsageError naming the first AllocationConfig training field in ``given``."""
    training = [k for k in given if k in training_only_fields()]
    if training:
        own = ", ".join(f.name for f in config_lib.fields_of(HeuristicConfig))
        raise UsageError(f"{training[0]}: a training option of group-robust-ppo/ppo; a "
                         f"rule-based policy is not trained; heuristic takes: {own}")


def main(algorithm: str, argv: list[str]) -> int:
    cfg, args = parse_args(argv)
    from platform import tracking
    from platform.allocation.evaluate import evaluate_rule, summarize

    import mlflow

    uri, exp_id = tracking.setup(args.tracking_uri, args.experiment)
    with tracking.tracked_run(run_name=cfg.name, tags=tracking.run_tags(
            TRACK, cfg.algorithm, policy=cfg.policy)) as run:
        mlflow.log_params(config_lib.tracked_params(cfg))
        episodes = evaluate_rule(cfg.policy, cfg, cfg.eval_episodes)
        metrics = summarize(episodes)
        tracking.log_metrics(metrics, step=0)
        mlflow.log_text(episodes.to_csv(index=False), "eval/episodes.csv")
    print(f"{cfg.policy} on {cfg.scenario}: {len(episodes)} episodes, eval return "
          f"{metrics['eval/return']:.3f}, dp_score {metrics.get('eval/fairness/dp_score', float('nan')):.3f}")
    print(f"MLflow run {run.info.run_id} (experiment {exp_id}) in {uri}")
    return 0
