"""``python -m platform.sweep group-robust-ppo --scenarios ... --lambdas ... --seeds N``: λ × seed grids.

A Ray Tune grid over scenarios × λ × robust_mode × seeds of group-robust PPO (the EquiRL
hospital-allocation report's protocol: L = (1-λ)·L_PPO + λ·L_robust, several seeds per cell,
four hospitals), λ = 0 (plain PPO whatever the mode) run once, plus rule-based baselines
(``--baselines triage,fcfs``: :mod:`envs.hospital.rules`) as trials of their own. Each trained
trial trains with :mod:`platform.allocation` (RLlib), then runs E greedy evaluation episodes on
fixed evaluation seeds (``eval_seed_base + i``, disjoint from the training seeds and identical
for every trial); a rule trial runs the same evaluation
(:func:`platform.allocation.evaluate.evaluate_rule`) on the same seeds. A trained trial is the
one allocation loop (:func:`platform.allocation.loop.train`, the same as ``platform.train``)
with a :class:`TuneSink`: results go to ``tune.report``, checkpoints to Tune.

* Concurrency: at most ``cluster CPUs // CPUs per trial`` trials at once.
* MLflow: one parent run per sweep, one child run per trial (params from
  ``base.config.tracked_params`` of the trial's AllocationConfig; the parent's without the
  grid fields, plus the grid; tags ``platform.tracking.run_tags`` plus the sweep's own;
  metrics per iteration with step = training iteration; evaluation means as ``eval/...``;
  per-episode rows as ``eval/episodes.parquet``). Logged from the driver by a Tune callback,
  so it works when trials run on other nodes.
* Resilience: ``FailureConfig(max_failures=...)`` retries a failing trial and never stops the
  others; ``--resume`` continues an interrupted sweep with ``Tuner.restore`` into the same
  parent and child runs; iterations already logged (a replay after a hard kill) are skipped.
* Storage: ``<storage_root()>/sweeps/<name>`` (``EQUIRL_STORAGE``), never ``~/ray_results``.
* Cluster: ``ray job submit --working-dir . -- python -m platform.sweep ...`` (RAY_ADDRESS).

Then ``python -m platform.report --experiment NAME --out DIR`` writes the statistics report.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from platform import cli, faults, tracking
from platform.report import (
    PARAM_LAMBDA,
    PARAM_POLICY,
    PARAM_SCENARIO,
    PARAM_SEED,
    TAG_ROLE,
    TAG_SWEEP,
    TAG_TRIAL,
)
from typing import Any

from base import config as config_lib
from base.errors import UsageError
from base.registry import Registry

STEP_KEY = "iteration"  # the algorithm's training iteration (MLflow step; 0 for a rule)
EPISODES_KEY = "eval_episode_rows"  # per-episode table in the last result (dict of lists)
SPEC_FILE = "equirl_sweep.json"
MAX_TRIALS = 10_000  # a bigger grid is a typo (validating its configs alone takes seconds)
TRACK = "allocation"
# AllocationConfig fields the grid sets per trial (never --set / --config)
GRID_FIELDS = ("algorithm", "scenario", "robust_lambda", "robust_mode", "seed")
GRID_FLAGS = {"robust_mode": "--modes", "robust_lambda": "--lambdas", "scenario": "--scenarios",
              "seed": "--seeds/--seed", "algorithm": "the sweep command"}
# sweep defaults under --config/--set: one CPU per trial, sampling in the trial process
SWEEP_DEFAULTS = {"num_env_runners": 0}

# name -> "module:function" trainable (a Tune function trainable taking the trial config)
SWEEPABLE: Registry = Registry("sweep algorithm")
SWEEPABLE.register("group-robust-ppo", "platform.sweep:allocation_trial",
                   help="group-robust PPO on the hospital simulators (platform.allocation)")


@dataclass
class SweepSpec:
    """What one sweep runs; saved next to Tune's state so ``--resume`` reruns the same grid."""

    algorithm: str
    scenarios: list[str]
    lambdas: list[float]
    seeds: list[int]
    base: dict[str, Any] = field(default_factory=dict)  # AllocationConfig fields shared by trials
    name: str = ""
    experiment: str = ""
    parent_run_id: str | None = None
    max_failures: int = 1
    modes: list[str] = field(default_factory=lambda: ["worst_group"])  # robust_mode axis
    baselines: list[str] = field(default_factory=list)  # rule names (envs.hospital.rules)
    iterations: dict[str, int] = field(default_factory=dict)  # scenario -> its own budget

    def arms(self) -> list[dict[str, Any]]:
        """The trained arms: ``{"robust_lambda", "robust_mode"}``, λ = 0 once (with the first
        mode: at λ = 0 group-robust PPO is PPO whatever the mode), then each λ > 0 × mode."""
        out = []
        for lam in self.lambdas:
            for mode in self.modes[:1] if lam == 0 else self.modes:
                out.append({"robust_lambda": lam, "robust_mode": mode})
        return out

    def cells(self) -> list[dict[str, Any]]:
        """Every trial's cell, in run order: scenario (slowest), the rules, the trained arms,
        seed (fastest). A rule cell has ``policy``; a trained one ``robust_lambda`` and
        ``robust_mode``."""
        out = []
        for sc in self.scenarios:
            arms = [{"policy": b} for b in self.baselines] + self.arms()
            out += [{"scenario": sc, **arm, "seed": seed} for arm in arms for seed in self.seeds]
        return out

    @property
    def n_trials(self) -> int:
        return len(self.scenarios) * len(self.seeds) * (len(self.arms()) + len(self.baselines))


# ----------------------------------------------------------------------- parsing
def parse_list(text: str, flag: str, kind=float) -> list:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise UsageError(f"{flag}: empty list; give comma-separated values, e.g. {flag} 0,0.1,0.3")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is not a comma-separated list of numbers") from None
    if len(set(values)) != len(values):
        raise UsageError(f"{flag}: duplicate values in {text!r}")
    return values


def parse_lambdas(text: str) -> list[float]:
    lambdas = parse_list(text, "--lambdas")
    bad = [x for x in lambdas if not (0.0 <= x <= 1.0) or math.isnan(x)]
    if bad:
        raise UsageError(f"--lambdas: {', '.join(f'{x:g}' for x in bad)} outside [0, 1]; "
                         "λ weights L_robust in (1-λ)·L_PPO + λ·L_robust")
    return lambdas


def parse_modes(text: str) -> list[str]:
    from algorithms.group_robust import ROBUST_OBJECTIVES

    modes = parse_list(text, "--modes", kind=str)
    unknown = [m for m in modes if m not in ROBUST_OBJECTIVES]
    if unknown:
        raise UsageError(f"--modes: unknown {', '.join(unknown)}; allowed: "
                         f"{', '.join(ROBUST_OBJECTIVES.names())}")
    return modes


def parse_baselines(text: str | None) -> list[str]:
    """``--baselines a,b``: rule names registered in :data:`envs.hospital.rules.RULES`."""
    if text is None:
        return []
    from envs.hospital import rules

    names = parse_list(text, "--baselines", kind=str)
    unknown = [n for n in names if n not in rules.RULES]
    if unknown:
        raise UsageError(f"--baselines: unknown {', '.join(unknown)}; allowed: "
                         f"{', '.join(rules.names())}")
    return names


def parse_iterations(text: str | None, scenarios: list[str]) -> dict[str, int]:
    """``--iterations-per-scenario urban=60,rural=40`` -> ``{"urban": 60, "rural": 40}``."""
    if text is None:
        return {}
    flag = "--iterations-per-scenario"
    out: dict[str, int] = {}
    for item in parse_list(text, flag, kind=str):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not sep or n < 1:
            raise UsageError(f"{flag}: {item!r} is not SCENARIO=ITERATIONS with ITERATIONS >= 1, "
                             f"e.g. {flag} urban=60,rural=40")
        if name not in scenarios:
            raise UsageError(f"{flag}: {name!r} is not in --scenarios; allowed: "
                             f"{', '.join(scenarios)}")
        if name in out:
            raise UsageError(f"{flag}: {name!r} appears twice")
        out[name] = n
    return out


def parse_scenarios(text: str) -> list[str]:
    names = parse_list(text, "--scenarios", kind=str)
    from platform.allocation import scenarios

    known = scenarios.names()
    unknown = [n for n in names if known and n not in known]
    if unknown:
        raise UsageError(f"--scenarios: unknown {', '.join(unknown)}; allowed: {', '.join(known)}")
    return names


def build_spec(algorithm: str, argv: list[str]) -> tuple[SweepSpec, Any]:
    """argv -> (SweepSpec, argparse namespace); every trial config is validated here."""
    from platform.allocation import scenarios
    from platform.allocation.config import AllocationConfig

    p = cli.parser(f"python -m platform.sweep {algorithm}", __doc__.split("\n\n")[0],
                   AllocationConfig)
    cli.add_common_train_options(p)
    g = p.add_argument_group("sweep options")
    everything = ",".join(scenarios.hospital_names())
    g.add_argument("--scenarios", default=everything,
                   help=f"comma-separated scenarios (default every hospital: {everything})")
    g.add_argument("--lambdas", default="0,0.1,0.2,0.3,0.4,0.5", help="comma-separated λ in [0, 1]")
    g.add_argument("--modes", default="worst_group",
                   help="comma-separated robust_mode values crossed with every λ > 0 (λ = 0 "
                        "is run once); default worst_group")
    g.add_argument("--baselines", default=None,
                   help="comma-separated rule-based policies evaluated beside the grid, one "
                        "trial per scenario × rule × seed (envs.hospital.rules: e.g. "
                        "triage,fcfs,equity_triage,random)")
    g.add_argument("--iterations-per-scenario", dest="iterations_per_scenario", default=None,
                   help="each hospital its own budget, e.g. urban=60,rural=40 (the others "
                        "keep --iterations)")
    g.add_argument("--seeds", type=int, default=5,
                   help="seeds per cell: --seed, --seed+1, ... (default 5)")
    g.add_argument("--name", default=None, help="sweep name (default: the experiment name)")
    g.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial")
    g.add_argument("--max-concurrent", type=int, default=None,
                   help="cap on concurrent trials (default: cluster CPUs // CPUs per trial)")
    g.add_argument("--no-report", action="store_true",
                   help="do not build the comparison report into the parent run at the end")
    a = p.parse_args(argv)
    if a.seeds < 1:
        raise UsageError(f"--seeds: got {a.seeds}; need >= 1 seed per cell")
    if a.max_failures < 0:
        raise UsageError(f"--max-failures: got {a.max_failures}; must be >= 0")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise UsageError(f"--max-concurrent: got {a.max_concurrent}; must be >= 1")
    seed0 = 0 if a.seed is None else a.seed
    experiment = a.experiment or "allocation-sweep"
    names = parse_scenarios(a.scenarios)
    spec = SweepSpec(algorithm=algorithm, scenarios=names,
                     lambdas=parse_lambdas(a.lambdas), seeds=[seed0],
                     base=shared_fields(a), name=a.name or experiment, experiment=experiment,
                     max_failures=a.max_failures, modes=parse_modes(a.modes),
                     baselines=parse_baselines(a.baselines),
                     iterations=parse_iterations(a.iterations_per_scenario, names))
    if spec.n_trials * a.seeds > MAX_TRIALS:  # checked before the grid is made
        raise UsageError(f"--seeds: {a.seeds} seeds x {spec.n_trials} cells is more than "
                         f"{MAX_TRIALS} trials")
    spec.seeds = list(range(seed0, seed0 + a.seeds))
    for cell in spec.cells():  # fail on bad --set fields before anything starts
        trial_config(spec, cell)
    return spec, a


def shared_fields(args) -> dict[str, Any]:
    """The AllocationConfig fields every trial shares, as given: sweep defaults < --config <
    --set < --iterations (the one precedence rule, :func:`base.config.merge_sources`); the
    grid fields are refused. Kept as given (not a full config) so --resume can compare it."""
    given = config_lib.merge_sources(args.config, args.overrides)
    for key in GRID_FIELDS:
        if key in given:
            raise UsageError(f"--set {key}: set by the sweep grid; use {GRID_FLAGS[key]}")
    flags = {field: getattr(args, dest) for dest, field in cli.COMMON_FLAGS.items()
             if field not in GRID_FIELDS}
    return config_lib.deep_merge(SWEEP_DEFAULTS, config_lib.merge_sources(
        args.config, args.overrides, flags))


def trial_config(spec: SweepSpec, cell: dict[str, Any]):
    """The validated config of one grid cell: an AllocationConfig (trained arm, with the
    scenario's own ``iterations`` when given) or a HeuristicConfig (rule cell)."""
    return cell_config(spec.algorithm, spec.base, cell, spec.iterations)


def cell_config(algorithm: str, base: dict[str, Any], cell: dict[str, Any],
                iterations: dict[str, int] | None = None):
    from platform.allocation.config import AllocationConfig, HeuristicConfig

    if "policy" in cell:  # a rule: the evaluation fields the trained trials share
        own = {f.name for f in config_lib.fields_of(HeuristicConfig)}
        shared = {k: v for k, v in base.items() if k in own and k not in ("algorithm", "run_name")}
        return config_lib.build(HeuristicConfig, {**shared, **cell})
    data = {**base, "algorithm": algorithm, **cell}
    if iterations and cell["scenario"] in iterations:
        data["iterations"] = iterations[cell["scenario"]]
    return config_lib.build(AllocationConfig, data)


def is_rule(cell: dict[str, Any]) -> bool:
    return "policy" in cell


# ------------------------------------------------------------------ the trainable
def allocation_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: the allocation loop (resuming from Tune's checkpoint).

    Reports once per training iteration (``iteration`` = the algorithm's iteration); the
    last report carries the evaluation means (``eval/...``) and the per-episode rows.
    """
    from platform.allocation import loop

    cfg = cell_config(config["algorithm"], config["base"], config["cell"],
                      config.get("iterations"))
    if is_rule(config["cell"]):
        return rule_trial(cfg)
    loop.train(cfg, TuneSink())


def rule_trial(cfg) -> None:
    """A rule's trial: the evaluation of a trained trial's last report, at step 0."""
    from platform.allocation.evaluate import evaluate_rule, summarize

    from ray import tune

    episodes = evaluate_rule(cfg.policy, cfg, cfg.eval_episodes)
    tune.report({STEP_KEY: 0, **summarize(episodes), EPISODES_KEY: episodes.to_dict("list")})


class TuneSink:
    """The sweep's sink of the allocation loop: one ``tune.report`` per iteration (the
    evaluation in the last), checkpoints through Tune every ``checkpoint_every`` (not after
    the last iteration). Replayed iterations are reported again; the driver's
    :class:`MlflowSweepCallback` skips the steps it has logged."""

    def last_logged(self) -> int:
        return 0

    def restore(self, algo) -> None:
        from platform.allocation import rllib

        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as path:
                rllib.restore_checkpoint(algo, path)

    def emit(self, step, algo) -> None:
        from platform.allocation import rllib
        from platform.allocation.evaluate import summarize

        from ray import tune

        report: dict[str, Any] = {k: v for k, v in step.metrics.items()
                                  if k != "training_iteration"}
        report[STEP_KEY] = step.iteration
        if step.evaluation is not None:
            report.update(summarize(step.evaluation))
            report[EPISODES_KEY] = step.evaluation.to_dict("list")
        if step.checkpoint and not step.final:
            with tempfile.TemporaryDirectory() as tmp:
                rllib.save_checkpoint(algo, tmp)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(report)


# -------------------------------------------------------------- MLflow callback
def _tune_callback_base():
    from ray import tune

    return tune.Callback


class MlflowSweepCallback(_tune_callback_base()):
    """Driver-side Tune callback: one child MLflow run per trial under the sweep's parent.

    Idempotent across ``Tuner.restore``: a trial's child run is found again by its Tune
    trial id (tag), and steps at or below the last logged ``iteration`` are not logged again.
    """

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, spec: dict[str, Any]):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.spec = spec
        self._runs: dict[str, str] = {}
        self._last: dict[str, int] = {}

    def __getstate__(self):  # caches are rebuilt from MLflow after Tuner.restore
        return {k: v for k, v in self.__dict__.items() if k not in ("_runs", "_last", "_client")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._runs, self._last = {}, {}

    @property
    def client(self):
        if getattr(self, "_client", None) is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.uri)
        return self._client

    def run_id(self, trial) -> str:
        """The trial's child run (found by trial id, else created with its params)."""
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_run_id}' and "
            f"tags.`{TAG_TRIAL}` = '{tid}'", max_results=1)
        if found:
            rid = found[0].info.run_id
            hist = self.client.get_metric_history(rid, STEP_KEY)
            self._last[rid] = int(max((m.value for m in hist), default=-1))
        else:
            rid = self._create_run(trial)
            self._last[rid] = -1
        self._runs[tid] = rid
        return rid

    def _create_run(self, trial) -> str:
        from mlflow.entities import Param

        c = trial.config["cell"]
        spec = SweepSpec(**{**self.spec, "parent_run_id": self.parent_run_id})
        cfg = trial_config(spec, c)
        tags = (tracking.run_tags(TRACK, cfg.algorithm, policy=cfg.policy) if is_rule(c)
                else tracking.run_tags(TRACK, spec.algorithm))
        run = self.client.create_run(self.experiment_id, run_name=_trial_name(trial.config), tags={
            "mlflow.parentRunId": self.parent_run_id, **tags,
            TAG_ROLE: "trial", TAG_TRIAL: trial.trial_id, TAG_SWEEP: spec.name})
        params = config_lib.tracked_params(cfg)
        for must in (PARAM_SCENARIO, PARAM_SEED, PARAM_POLICY if is_rule(c) else PARAM_LAMBDA):
            assert must in params, must
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        rid = self.run_id(trial)
        self.client.update_run(rid, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from platform.tracking import clean_metric_name

        from mlflow.entities import Metric

        rid = self.run_id(trial)
        step = int(result.get(STEP_KEY, 0))
        if step <= self._last.get(rid, 0):
            return  # replayed iteration (restore after a hard kill): already logged
        now = _now_ms()
        metrics = [Metric(clean_metric_name(k), float(v), now, step)
                   for k, v in result.items() if _is_metric(k, v)]
        for i in range(0, len(metrics), 900):  # MLflow's log_batch limit is 1000
            self.client.log_batch(rid, metrics=metrics[i:i + 900])
        rows = result.get(EPISODES_KEY)
        if rows:
            self._log_episodes(rid, rows)
        self._last[rid] = step
        print(_progress(trial, step, result), flush=True)

    def _log_episodes(self, rid: str, rows: dict[str, list]) -> None:
        from platform.report import EPISODES_ARTIFACT

        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(EPISODES_ARTIFACT).name
            pd.DataFrame(rows).to_parquet(path, index=False)
            self.client.log_artifact(rid, str(path), artifact_path=str(Path(EPISODES_ARTIFACT).parent))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_id(trial), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        from platform.tracking import TAG_ERROR

        rid = self.run_id(trial)
        try:  # the exception line of the trial's error file (written before this callback)
            local = Path(trial.error_file) if getattr(trial, "error_file", None) else None
            error = local.read_text() if local and local.is_file() else trial.get_error()
            self.client.set_tag(rid, TAG_ERROR, _last_line(error) if error else "unknown error")
        finally:
            self.client.set_terminated(rid, "FAILED")


# Tune adds bookkeeping keys to every result; they are not metrics of the run.
_TUNE_KEYS = {"training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
              "time_since_restore", "iterations_since_restore", "timesteps_total",
              "episodes_total", "done", "checkpoint_dir_name", "should_checkpoint"}


def _is_metric(key: str, value: Any) -> bool:
    if key in _TUNE_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(float(value))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _progress(trial, step: int, r: dict[str, Any]) -> str:
    def f(key: str) -> str:
        return f"{r[key]:.3f}" if isinstance(r.get(key), (int, float)) else "-"

    line = (f"[{_trial_name(trial.config)}] iter {step}  return {f('return_mean')}  "
            f"group_gap {f('group_gap')}")
    if "eval/return" in r:
        line += (f"  | eval return {f('eval/return')}  dp_score {f('eval/fairness/dp_score')}  "
                 f"wte_score {f('eval/fairness/wte_score')}")
    return line


def _trial_name(config: dict[str, Any]) -> str:
    c = config["cell"]
    if is_rule(c):
        return f"{c['scenario']}-{c['policy']}-s{c['seed']}"
    mode = f"-{c['robust_mode']}" if c["robust_lambda"] else ""
    return f"{c['scenario']}-l{c['robust_lambda']:g}{mode}-s{c['seed']}"


# --------------------------------------------------------------------- driver
def sweep_dir(name: str) -> Path:
    from platform.cluster import storage_root

    return storage_root() / "sweeps" / name


def _param_space(spec: SweepSpec) -> dict[str, Any]:
    """One grid axis of cells (:meth:`SweepSpec.cells`): scenario (slowest), the rules, the
    trained arms (λ, mode), seed (fastest).

    Tune orders several ``grid_search`` axes by key name, not as given; one axis of cells
    keeps the order, so whole scenario × arm cells (all seeds) finish first and a partial
    sweep can already be analysed.
    """
    from ray import tune

    return {"algorithm": spec.algorithm, "base": spec.base, "iterations": spec.iterations,
            "cell": tune.grid_search(spec.cells())}


def _resources(spec: SweepSpec):
    """One CPU for the trial (learner + local sampling) plus one per remote env runner."""
    from ray import tune

    runners = int(spec.base.get("num_env_runners", 0))
    return tune.PlacementGroupFactory([{"CPU": 1}] + [{"CPU": 1}] * runners)


def max_concurrent(spec: SweepSpec, requested: int | None) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = 1 + int(spec.base.get("num_env_runners", 0))
    bound = max(1, cpus // per_trial)
    if per_trial > cpus:
        raise UsageError(f"--set num_env_runners: a trial needs {per_trial} CPUs, the cluster has {cpus}")
    return min(bound, requested) if requested else bound


def _parent_run(client, exp_id: str, spec: SweepSpec) -> str:
    from platform.cluster import ray_run_info

    from mlflow.entities import Param

    run = client.create_run(exp_id, run_name=f"sweep-{spec.name}", tags={
        **tracking.run_tags(TRACK, spec.algorithm, **ray_run_info()), TAG_ROLE: "parent",
        TAG_SWEEP: spec.name})
    cfg = trial_config(spec, {"scenario": spec.scenarios[0], **spec.arms()[0],
                              "seed": spec.seeds[0]})
    params = {k: v for k, v in config_lib.tracked_params(cfg).items()
              if k == "algorithm" or k not in GRID_FIELDS}  # what every trial shares
    if spec.iterations:
        params.pop("iterations", None)  # differs by scenario
    params.update(scenarios=",".join(spec.scenarios),
                  lambdas=",".join(f"{x:g}" for x in spec.lambdas),
                  modes=",".join(spec.modes), baselines=",".join(spec.baselines) or "none",
                  seeds=",".join(map(str, spec.seeds)), n_trials=spec.n_trials)
    if spec.iterations:
        params["iterations_per_scenario"] = ",".join(
            f"{sc}={spec.iterations.get(sc, cfg.iterations)}" for sc in spec.scenarios)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def _load_resume(spec: SweepSpec, path: Path) -> SweepSpec:
    saved = SweepSpec(**json.loads((path / SPEC_FILE).read_text()))
    differs = [k for k in ("algorithm", "scenarios", "lambdas", "seeds", "base", "modes",
                           "baselines", "iterations")
               if getattr(saved, k) != getattr(spec, k)]
    if differs:
        raise UsageError(f"--resume: sweep {spec.name!r} was started with different "
                         f"{', '.join(differs)}; rerun with the original options or a new --name")
    return saved


def check_sweep_path(spec: SweepSpec, resume: bool) -> Path:
    """The sweep's Tune directory; UsageError if --resume has nothing to resume or a new
    sweep would overwrite one."""
    path = sweep_dir(spec.name)
    if resume and not (path / "tuner.pkl").exists():
        raise UsageError(f"--resume: no sweep {spec.name!r} at {path}; start it without --resume")
    if not resume and path.exists():
        raise UsageError(f"--name: sweep {spec.name!r} already exists at {path}; pass --resume "
                         "to continue it or choose another --name")
    return path


def run_sweep(spec: SweepSpec, *, uri: str, exp_id: str, resume: bool = False,
              trainable=None, max_concurrent_trials: int | None = None) -> dict[str, Any]:
    """Run (or resume) the grid; returns counts of finished/errored trials."""
    from platform.cluster import init_ray

    import mlflow
    from ray import tune

    path = check_sweep_path(spec, resume)
    if resume:
        spec = _load_resume(spec, path)
    init_ray()
    client = mlflow.MlflowClient(uri)
    trainable = trainable or SWEEPABLE.get(spec.algorithm)
    trainable = tune.with_resources(trainable, _resources(spec))
    if resume:
        client.update_run(spec.parent_run_id, status="RUNNING")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        spec.parent_run_id = _parent_run(client, exp_id, spec)
        callback = MlflowSweepCallback(uri, exp_id, spec.parent_run_id,
                                       {k: v for k, v in asdict(spec).items() if k != "parent_run_id"})
        tuner = tune.Tuner(
            trainable, param_space=_param_space(spec),
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent(spec, max_concurrent_trials)),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=str(path.parent), callbacks=[callback], verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        path.mkdir(parents=True, exist_ok=True)
        (path / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2))
    status = "KILLED"
    try:
        faults.check("sweep.fit")  # crash tests (EQUIRL_FAULT); a no-op otherwise
        results = tuner.fit()
        errors = [r for r in results if r.error is not None]
        done = results.num_terminated + results.num_errors
        interrupted = done < spec.n_trials  # Ctrl-C: Tune saved its state and returned
        # failed trials are FAILED child runs + a count on the parent
        status = "KILLED" if interrupted else "FINISHED"
        client.set_tag(spec.parent_run_id, "equirl.sweep.failed_trials", str(len(errors)))
        return {"trials": spec.n_trials, "done": done, "errors": len(errors),
                "interrupted": interrupted, "parent_run_id": spec.parent_run_id, "path": str(path),
                "failed": [_last_line(r.error) for r in errors]}
    except KeyboardInterrupt:
        raise  # KILLED: --resume continues
    except BaseException as exc:  # the driver itself failed: FAILED, with the error
        status = "FAILED"
        client.set_tag(spec.parent_run_id, tracking.TAG_ERROR, f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        _end_unfinished_children(client, exp_id, spec.parent_run_id)
        client.set_terminated(spec.parent_run_id, status)


def _last_line(error: BaseException | str) -> str:
    """The exception line of a (Ray-wrapped) trial error or its text, e.g. ``RuntimeError: ...``."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return (lines[-1] if lines else repr(error))[:300]


def _end_unfinished_children(client, exp_id: str, parent_id: str) -> None:
    """Trial runs still RUNNING after fit() returned were interrupted: KILLED (resume reopens)."""
    for run in client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}' and "
                                  "attributes.status = 'RUNNING'", max_results=10_000):
        client.set_terminated(run.info.run_id, "KILLED")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m platform.sweep <algorithm> [options]\n\nalgorithms: "
              f"{', '.join(SWEEPABLE.names())}\n\n{__doc__}")
        return 0 if argv else 2
    algorithm, rest = argv[0], argv[1:]
    if algorithm not in SWEEPABLE:
        raise UsageError(f"unknown algorithm {algorithm!r}; known: {', '.join(SWEEPABLE.names())}")
    spec, args = build_spec(algorithm, rest)
    check_sweep_path(spec, args.resume)
    uri, exp_id = tracking.setup(args.tracking_uri, spec.experiment)
    res = run_sweep(spec, uri=uri, exp_id=exp_id, resume=args.resume,
                    max_concurrent_trials=args.max_concurrent)
    if res["interrupted"]:
        print(f"sweep {spec.name} interrupted (MLflow parent run {res['parent_run_id']} in {uri}); "
              "continue with the same command plus --resume", file=sys.stderr)
        return 130
    ok = res["done"] - res["errors"]
    print(f"sweep {spec.name}: {ok}/{res['trials']} trials finished, {res['errors']} failed; "
          f"MLflow parent run {res['parent_run_id']} in {uri}")
    for err in res["failed"]:
        print(f"  failed trial: {err}", file=sys.stderr)
    if not args.no_report:
        attach_report(uri, spec.experiment, res["parent_run_id"])
    print(f"report: python -m platform.report --experiment {spec.experiment} --out DIR")
    return 0 if not res["errors"] else 1


def attach_report(uri: str, experiment: str, parent_run_id: str) -> bool:
    """Build the comparison report (``platform.report``) into the finished sweep's parent run
    (artifacts ``report/``). A report that cannot be built (e.g. no λ = 0 arm, or too few
    trials) does not fail the sweep: the reason is printed and tagged
    (``equirl.sweep.report``)."""
    import tempfile
    from platform.report import build_report

    import mlflow

    client = mlflow.MlflowClient(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            build_report(client, experiment, Path(tmp), parent_run_id=parent_run_id)
    except Exception as exc:  # noqa: BLE001 (the sweep itself finished; say why, do not fail it)
        reason = f"{type(exc).__name__}: {exc}"[:300]
        client.set_tag(parent_run_id, "equirl.sweep.report", f"not built: {reason}")
        print(f"report: not built ({reason}); build it with python -m platform.report", file=sys.stderr)
        return False
    client.set_tag(parent_run_id, "equirl.sweep.report", "report/report.md")
    print(f"report: logged to the parent run {parent_run_id} (artifacts report/)")
    return True


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
