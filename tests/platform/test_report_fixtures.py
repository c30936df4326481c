"""Helpers (no tests): sweep-shaped MLflow data (parent + child runs) for report and UI tests.

The metric names and tags are the ones ``platform.sweep`` writes (constants from
``platform.report``). Values are synthetic with a known structure: in scenario "urban"
fairness improves strongly with λ (detectable), in "rural" nothing changes (null effect).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from platform import report as R

import numpy as np
import pandas as pd

GROUPS = ("child", "adult", "senior")


def make_sweep(uri: str, experiment: str, *, scenarios=("urban", "rural"), lambdas=(0.0, 0.3),
               seeds=4, iterations=3, episodes=6, drop_metrics=(), duplicate_step=True,
               rng_seed=0, legacy_names=False, modes=(), rules=None, curves=False) -> dict:
    """Create one sweep (parent run + scenarios × λ × seeds child runs). Returns ids.

    ``legacy_names``: log the fairness scores under their names before issue 12
    (``eval/fairness/dp`` ...), as sweeps run before the rename did.
    ``modes``: log ``robust_mode`` and cross every λ > 0 with each mode (λ = 0 once, as
    ``platform.sweep --modes`` does). ``rules``: rule name -> (return, DP score) of a
    rule-based baseline, one child run per scenario × rule × seed with the same value at
    every seed (a deterministic rule on fixed evaluation seeds), params ``policy``,
    ``scenario``, ``seed``. ``curves``: log ``eval_curve/return`` per iteration (flat from the
    middle on in "urban", still rising by 5 per iteration in "rural") and the per-capita
    outcomes ``eval/group/<g>/return_per_capita``.
    """
    from platform.tracking import artifact_root_for

    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=artifact_root_for(uri))
    rng = np.random.default_rng(rng_seed)
    parent = client.create_run(exp_id, run_name="sweep", tags={
        R.TAG_ROLE: "parent", R.TAG_SWEEP: experiment})
    client.log_batch(parent.info.run_id, params=[Param("iterations", str(iterations)),
                                                 Param("eval_episodes", str(episodes))])
    children = []
    arms = [(lam, mode) for lam in lambdas for mode in ((modes[:1] if lam == 0 else modes) or [None])]
    for sc in scenarios:
        effect = 1.0 if sc == "urban" else 0.0
        for name, (ret, dp) in (rules or {}).items():
            for seed in range(seeds):
                run = client.create_run(exp_id, run_name=f"{sc}-{name}-s{seed}", tags={
                    "mlflow.parentRunId": parent.info.run_id, R.TAG_ROLE: "trial",
                    R.TAG_TRIAL: f"{sc}_{name}_{seed}"})
                metrics = {R.RETURN_KEY: ret, "eval/fairness/dp_score": dp,
                           "eval/fairness/eo_score": 0.85, "eval/fairness/wte_score": 0.5,
                           "eval/fairness/individual_score": 0.9,
                           **{f"eval/group/{g}/return_per_capita": 0.1 * g_i
                              for g_i, g in enumerate(GROUPS)}}
                client.log_batch(run.info.run_id, metrics=[
                    Metric(k, v, 1_700_000_000_000, 0) for k, v in metrics.items()], params=[
                    Param(R.PARAM_SCENARIO, sc), Param(R.PARAM_POLICY, name),
                    Param(R.PARAM_SEED, str(seed))])
                client.set_terminated(run.info.run_id, "FINISHED")
                children.append(run.info.run_id)
        for lam, mode in arms:
            for seed in range(seeds):
                arm = f"l{lam}" + (f"-{mode}" if mode else "")
                run = client.create_run(exp_id, run_name=f"{sc}-{arm}-s{seed}", tags={
                    "mlflow.parentRunId": parent.info.run_id, R.TAG_ROLE: "trial",
                    R.TAG_TRIAL: f"{sc}_{arm}_{seed}"})
                rid = run.info.run_id
                ts = 1_700_000_000_000
                ms = []
                if curves:
                    for it in range(1, iterations + 1):
                        level = -100 + (5 * min(it, iterations // 2) if effect else 5 * it)
                        ms.append(Metric("eval_curve/return", level + seed + rng.normal(0, 0.2),
                                         ts + it, it))
                for it in range(1, iterations + 1):
                    for g_i, g in enumerate(GROUPS):
                        v = -10 + it + g_i + lam * effect * 2 + rng.normal(0, 0.3)
                        ms.append(Metric(f"group/{g}/return", v, ts + it, it))
                if duplicate_step:  # a replayed iteration (hard kill + restore)
                    ms.append(Metric(f"group/{GROUPS[0]}/return", 99.0, ts + 100, iterations))
                waits = {g: 2.0 + g_i * (1 - 0.8 * lam * effect) for g_i, g in enumerate(GROUPS)}
                ep = pd.DataFrame({
                    "episode": range(episodes), "seed": [10_000 + e for e in range(episodes)],
                    "return": rng.normal(-100 - 5 * lam * effect, 1.0, episodes),
                    **{f"group/{g}/mean_wait": rng.normal(w, 0.1, episodes).clip(0)
                       for g, w in waits.items()}})
                summary = {
                    R.RETURN_KEY: float(ep["return"].mean()),
                    "eval/fairness/dp_score": 0.8 + 0.15 * lam * effect + rng.normal(0, 0.01),
                    "eval/fairness/eo_score": 0.9 + 0.05 * lam * effect + rng.normal(0, 0.01),
                    "eval/fairness/wte_score": 0.6 + 0.3 * lam * effect + rng.normal(0, 0.02),
                    "eval/fairness/individual_score": 0.95 + rng.normal(0, 0.005),
                    "eval/util/beds": 0.8 + rng.normal(0, 0.02),
                    **{f"eval/group/{g}/mean_wait": float(ep[f"group/{g}/mean_wait"].mean())
                       for g in GROUPS},
                }
                if curves:
                    summary.update({f"eval/group/{g}/return_per_capita":
                                    0.2 * g_i + 0.3 * lam * effect + rng.normal(0, 0.01)
                                    for g_i, g in enumerate(GROUPS)})
                if legacy_names:
                    rename = {new: old for old, new in R.LEGACY_KEYS.items()}
                    summary = {rename.get(k, k): v for k, v in summary.items()}
                ms += [Metric(k, v, ts, iterations) for k, v in summary.items()
                       if k not in drop_metrics]
                params = [Param(R.PARAM_SCENARIO, sc), Param(R.PARAM_LAMBDA, str(lam)),
                          Param(R.PARAM_SEED, str(seed)), Param(R.PARAM_ITERATIONS, str(iterations))]
                if mode:
                    params.append(Param(R.PARAM_MODE, mode))
                client.log_batch(rid, metrics=ms, params=params,
                                 tags=[RunTag("mlflow.runName", run.info.run_name)])
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / Path(R.EPISODES_ARTIFACT).name
                    ep.to_parquet(path)
                    client.log_artifact(rid, str(path), artifact_path=str(Path(R.EPISODES_ARTIFACT).parent))
                client.set_terminated(rid, "FINISHED")
                children.append(rid)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return {"experiment_id": exp_id, "parent": parent.info.run_id, "children": children}
