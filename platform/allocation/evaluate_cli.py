"""``python -m platform.evaluate allocation``: score a trained allocation policy or a rule.

    python -m platform.evaluate allocation --run RUN_ID [--episodes 20] [--out DIR]
    python -m platform.evaluate allocation --checkpoint DIR --scenario rural [--episodes 20]
    python -m platform.evaluate allocation --policy triage --scenario rural [--episodes 20]

The policy: a ``platform.train`` allocation run (``--run``: its latest checkpoint, tag
``equirl.checkpoint``, and its logged ``config.yaml``), any allocation checkpoint folder
(``--checkpoint``: ``iter_<n>`` of a run, ``checkpoint_<n>`` of a sweep trial, or the RLModule
folder inside one), or a rule (``--policy``, ``envs.hospital.rules``). Trained policies act
greedily through the RLModule alone (``RLModule.from_checkpoint``: no Ray, no env runners),
exactly as the training run's own evaluation does, so ``--run`` on the run's evaluation seeds
reproduces its ``eval/`` metrics. Episodes run on the evaluation seeds ``--seed-base + i``
(default the config's ``eval_seed_base``, disjoint from training seeds).

Outputs, like ``platform.evaluate clinical``: an MLflow run (experiment ``evaluate``; tags
``equirl.command=evaluate``, ``equirl.track=allocation``) with the ``eval/`` metrics, the
per-group table ``eval/by_group/step-000000.csv`` and ``summary.md``; and ``<out>/report.json``
and ``<out>/report.md`` (the headline with 95% bootstrap CIs over episodes and the per-group
table; groups under ``--report-min-size`` patients show their count only). Aggregates only.

Bad input (no or two policy sources, an unknown rule or scenario, a checkpoint folder without
a module, a policy trained for another hospital's observation space) -> ``error: ...`` naming
the flag and exit code 2 before any run or file is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from base.errors import UsageError

MODULE_DIR = "learner_group/learner/rl_module/default_policy"


def parser():
    from platform.cli import add_tracking_options, parser

    p = parser("python -m platform.evaluate allocation", __doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_ID", help="a platform.train allocation run")
    src.add_argument("--checkpoint", metavar="DIR", help="an allocation checkpoint folder")
    src.add_argument("--policy", metavar="RULE", help="a rule (envs.hospital.rules)")
    p.add_argument("--scenario", default=None,
                   help="hospital (default: the run's; required with --checkpoint and --policy)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--seed-base", type=int, default=None,
                   help="first evaluation seed (default: the config's eval_seed_base)")
    p.add_argument("--seed", type=int, default=0, help="a random rule's own seed")
    p.add_argument("--report-min-size", type=int, default=10,
                   help="privacy: groups with fewer patients over the episodes show their count, "
                        "not their rates (default 10)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for report.json and report.md (default evaluations/<run name>)")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    add_tracking_options(p, default_experiment="evaluate")
    return p


def module_dir(path: Path) -> Path:
    """The RLModule folder of a checkpoint (or the folder itself, if it is one)."""
    for candidate in (path / MODULE_DIR, path / "default_policy", path):
        if (candidate / "module_state.pkl").is_file() and (candidate / "metadata.json").is_file():
            return candidate.resolve()
    raise UsageError(f"--checkpoint: {path} holds no RLModule ({MODULE_DIR}/module_state.pkl "
                     "and metadata.json); pass an allocation checkpoint folder")


def _run_source(run_id: str, tracking_uri: str | None) -> tuple[dict[str, Any], Path, str]:
    """(the run's config fields, its checkpoint folder, its name) of a platform.train run."""
    from platform import tracking

    import mlflow
    import yaml

    client = mlflow.MlflowClient(tracking_uri or tracking.default_tracking_uri())
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 (MlflowException: not found / bad id)
        raise UsageError(f"--run: no run {run_id!r} in {client.tracking_uri}") from exc
    ckpt = run.data.tags.get(tracking.TAG_CHECKPOINT)
    if run.data.tags.get("equirl.track") != "allocation" or not ckpt:
        raise UsageError(f"--run: {run_id} is not an allocation training run with a checkpoint "
                         f"(tags equirl.track={run.data.tags.get('equirl.track')!r}, "
                         f"equirl.checkpoint={ckpt!r})")
    if not Path(ckpt).is_dir():
        raise UsageError(f"--run: its checkpoint folder {ckpt} does not exist (any more)")
    try:
        fields = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"--run: {run_id} has no config.yaml artifact") from exc
    return fields, Path(ckpt), run.info.run_name


def _greedy(module_path: Path):
    from platform.allocation import rllib

    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(str(module_path))

    def act(obs, env):
        return rllib.greedy_action(module, obs)
    return module, act


def main(argv: list[str]) -> int:
    from platform import tracking
    from platform.allocation import artifacts
    from platform.allocation.config import AllocationConfig, HeuristicConfig
    from platform.allocation.evaluate import evaluate_policy, evaluate_rule, summarize

    from base.config import build

    args = parser().parse_args(argv)
    if args.episodes < 1:
        raise UsageError(f"--episodes: {args.episodes} must be >= 1")
    if args.report_min_size < 1:
        raise UsageError(f"--report-min-size: {args.report_min_size} must be >= 1")
    tracking.check_tracking_uri(args.tracking_uri or tracking.default_tracking_uri())
    evaluation = {"eval_episodes": args.episodes}
    if args.seed_base is not None:
        evaluation["eval_seed_base"] = args.seed_base
    if args.policy:
        if not args.scenario:
            raise UsageError("--scenario: required with --policy (e.g. --scenario rural)")
        cfg = build(HeuristicConfig, {"policy": args.policy, "scenario": args.scenario,
                                      "seed": args.seed, **evaluation})
        source, name = f"rule {args.policy}", args.policy
    else:
        if args.run:
            fields, ckpt, run_name = _run_source(args.run, args.tracking_uri)
            keep = ("scenario", "group_key", "env_config", "seed", "eval_seed_base")
            base = {k: fields[k] for k in keep if k in fields}
            source, name = f"run {args.run} ({ckpt})", run_name
        else:
            if not args.scenario:
                raise UsageError("--scenario: required with --checkpoint (e.g. --scenario rural)")
            ckpt, base = Path(args.checkpoint), {}
            source, name = f"checkpoint {ckpt}", ckpt.resolve().parent.name
        if args.scenario:
            base["scenario"] = args.scenario
        cfg = build(AllocationConfig, {**base, **evaluation})
        module, act = _greedy(module_dir(ckpt))
        _check_spaces(module, cfg)
    run_name = args.run_name or f"eval-{name}-{cfg.scenario}"
    out = Path(args.out or Path("evaluations") / run_name)
    if args.policy:
        episodes = evaluate_rule(args.policy, cfg, args.episodes)
    else:
        from platform.allocation import rllib

        with rllib.eval_mode(module):
            episodes = evaluate_policy(lambda seed: act, cfg, args.episodes)
    metrics = summarize(episodes)
    head = artifacts.headline(episodes)
    table = artifacts.group_table(episodes, 0, args.report_min_size)
    meta = {"policy": source, "scenario": cfg.scenario, "episodes": args.episodes,
            "seed_base": cfg.eval_seed_base, "report_min_size": args.report_min_size}
    uri, _ = tracking.setup(args.tracking_uri, args.experiment)
    import mlflow

    title = f"Evaluation of {source} on {cfg.scenario}"
    tags = tracking.run_tags("allocation", "evaluate", command="evaluate")
    with tracking.tracked_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(meta)
        tracking.log_metrics(metrics, step=0)
        artifacts.log_evaluation(episodes, 0, args.report_min_size)
        artifacts.log_summary(title, [table], episodes, args.report_min_size)
        out.mkdir(parents=True, exist_ok=True)
        report = {"meta": meta, "run_id": run.info.run_id, "metrics": metrics,
                  "headline": {k: {"mean": m, "ci_low": lo, "ci_high": hi}
                               for k, (m, lo, hi) in head.items()},
                  "groups": json.loads(table.to_json(orient="records"))}
        for fname, text in (("report.json", json.dumps(report, indent=1, sort_keys=True)),
                            ("report.md", artifacts.summary_markdown(title, episodes, table,
                                                                     args.report_min_size))):
            tmp = out / f".{fname}.tmp"
            tmp.write_text(text)
            tmp.replace(out / fname)
        mlflow.log_artifact(str(out / "report.md"))
    gap = head.get("per-capita gap (best - worst group)", (math.nan,) * 3)[0]
    print(f"evaluate: run {run.info.run_id} ({uri}); return {metrics['eval/return']:.3f}, "
          f"per-capita gap {gap:.3f}; report {out / 'report.md'}")
    return 0


def _check_spaces(module, cfg) -> None:
    from platform.allocation import scenarios

    env = scenarios.make(cfg.scenario, cfg.env_creator_config())
    try:
        if (module.observation_space.shape != env.observation_space.shape
                or module.action_space != env.action_space):
            raise UsageError(
                f"--scenario: the policy was trained for observations {module.observation_space.shape} "
                f"and actions {module.action_space}; {cfg.scenario} has "
                f"{env.observation_space.shape} and {env.action_space}")
    finally:
        env.close()
