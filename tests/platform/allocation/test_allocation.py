"""platform.allocation in-process: config validation, metrics, evaluation, train/resume.

A tiny two-group env (toy_allocation.py) stands in for the hospital simulators so these
tests stay fast; the CLI tests in test_allocation_cli.py run the real simulators.
"""

from __future__ import annotations

from platform.allocation.config import AllocationConfig

import numpy as np
import pytest
from toy_allocation import TOY, register_toy, toy_config

from base.config import fields_of, tracked_params
from base.errors import ConfigError


@pytest.fixture(scope="module")
def toy(ray_session):
    return register_toy()


def _cfg(**kw) -> AllocationConfig:
    return toy_config(**kw)


# ----------------------------------------------------------------------- validation
@pytest.mark.parametrize("field,value,message", [
    ("robust_lambda", 1.5, "allowed: a number in \\[0, 1\\]"),
    ("robust_lambda", -0.5, "allowed: a number in \\[0, 1\\]"),
    ("iterations", 0, "must be >= 1"),
    ("robust_mode", "median", "allowed: gap, ggf, worst_group"),
    ("robust_eta", 0.0, "must be > 0"),
    ("robust_ggf_base", 1.0, "must be > 1"),
    ("algorithm", "dqn", "allowed: 'group-robust-ppo', 'ppo'"),
    ("scenario", "mars", "allowed: .*" + TOY),
    ("minibatch_size", 4096, "allowed: 1..train_batch_size"),
    ("eval_seed_base", 5, "must be >= seed \\+ 10000"),
])
def test_config_errors_name_field_and_allowed_values(toy, field, value, message):
    with pytest.raises(ConfigError, match=f"^{field}: .*{message}"):
        _cfg(**{field: value})


def test_unknown_field_lists_allowed(toy):
    with pytest.raises(ConfigError, match="lambda: unknown field; allowed: .*robust_lambda"):
        _cfg(**{"lambda": 0.2})


def test_mlflow_params_are_the_comparable_few(toy):
    """MLflow params = tracked_params(cfg): config fields only (never the flattened RLlib
    config), no local paths or run names; λ/mode of a plain-PPO run are 0.0/none."""
    params = tracked_params(_cfg(robust_lambda=0.2, robust_mode="worst_group"))
    assert params["algorithm"] == "group-robust-ppo" and params["scenario"] == TOY
    assert params["robust_lambda"] == "0.2" and params["robust_mode"] == "worst_group"
    assert set(params) <= {f.name for f in fields_of(AllocationConfig)}
    assert not {"checkpoint_dir", "run_name"} & set(params)
    assert {"seed", "eval_seed_base", "hidden_sizes"} <= set(params)
    ppo = tracked_params(_cfg(algorithm="ppo", robust_lambda=0.2))
    assert ppo["robust_lambda"] == "0.0" and ppo["robust_mode"] == "none"


def test_mode_parameters_are_params_only_where_they_apply(toy):
    dro = tracked_params(_cfg(robust_mode="worst_group", robust_eta=0.25))
    assert dro["robust_eta"] == "0.25" and "robust_ggf_base" not in dro
    ggf = tracked_params(_cfg(robust_mode="ggf"))
    assert ggf["robust_ggf_base"] == "2.0" and "robust_eta" not in ggf


def test_build_algo_config_is_seeded_with_restarts(toy):
    from platform.allocation.loop import build_algo_config
    from platform.allocation.rllib import GroupRobustPPOConfig

    algo_cfg = build_algo_config(_cfg(seed=3, robust_lambda=0.4))
    assert isinstance(algo_cfg, GroupRobustPPOConfig)
    assert algo_cfg.seed == 3 and algo_cfg.restart_failed_env_runners
    assert algo_cfg.robust_lambda == 0.4 and algo_cfg.env == TOY
    assert algo_cfg.n_groups == 2 and algo_cfg.model_config["n_groups"] == 2  # from the env
    assert type(build_algo_config(_cfg(algorithm="ppo"))).__name__ == "PPOConfig"


# ------------------------------------------------------------- metrics + evaluation
@pytest.fixture(scope="module")
def trained(toy):
    from platform.allocation.loop import build_algo

    cfg = _cfg(seed=1)
    algo = build_algo(cfg)
    results = [algo.train() for _ in range(2)]
    yield cfg, algo, results
    algo.stop()


def test_iteration_metrics_are_namespaced(trained):
    from platform.allocation.loop import iteration_metrics

    _, _, results = trained
    m = iteration_metrics(results[-1], ["young", "old"])
    assert m["training_iteration"] == 2.0
    for key in ("group_gap", "return_mean", "env_steps_per_s", "fairness/dp_score",
                "group/young/return_per_capita", "group/old/return_per_capita",
                "group/young/value_per_capita", "robust/weight/young", "robust/weight/old",
                "group/young/return", "group/old/return", "group/old/treat_rate", "loss/policy",
                "loss/group_vf"):
        assert key in m, key
    assert all(np.isfinite(v) for v in m.values())
    # the gap is between the groups' per-capita returns, not a surrogate's noise
    assert m["group_gap"] == pytest.approx(abs(m["group/young/return_per_capita"]
                                               - m["group/old/return_per_capita"]))
    assert m["robust/weight/young"] + m["robust/weight/old"] == pytest.approx(1.0)
    assert m["env_steps_per_s"] > 0 and m["env_steps_total"] >= 256
    # The per-group returns add up to the episode return (same episodes, same window).
    assert m["group/young/return"] + m["group/old/return"] == pytest.approx(m["return_mean"], rel=1e-6)
    assert "robust/weight/0" in iteration_metrics(results[-1])


def test_evaluate_rows_seeds_and_determinism(trained):
    from platform.allocation.evaluate import evaluate

    cfg, algo, _ = trained
    df = evaluate(algo, cfg, 3, [cfg.eval_seed_base + i for i in range(3)])
    assert list(df["episode"]) == [0, 1, 2]
    assert list(df["seed"]) == cfg.eval_seeds(3) and min(df["seed"]) >= cfg.seed + 10_000
    assert {"return", "length", "fairness/dp_score", "group/young/return"} <= set(df.columns)
    assert (df["length"] == 16).all()
    assert df["return"].to_numpy() == pytest.approx(
        df.filter(regex=r"^group/.*/return$").sum(axis=1).to_numpy())
    again = evaluate(algo, cfg, 3, cfg.eval_seeds(3))
    assert df.equals(again)
    other = evaluate(algo, cfg, 3, [cfg.eval_seed_base + 100 + i for i in range(3)])
    assert not df["fairness/dp_score"].equals(other["fairness/dp_score"]) \
        or not df["return"].equals(other["return"])


# ------------------------------------------------------------------ train + resume
@pytest.mark.timeout(300)
def test_main_logs_each_iteration_once_and_resume_continues(toy, mlflow_uri, tmp_path, capsys):
    from platform.allocation.train import main
    from platform.tracking import TAG_CHECKPOINT

    import mlflow

    common = ["--tracking-uri", mlflow_uri, "--experiment", "alloc-test", "--scenario", TOY,
              "--set", "num_env_runners=0", "--set", "num_envs_per_env_runner=1",
              "--set", "train_batch_size=128",
              "--set", "minibatch_size=64", "--set", "num_epochs=1", "--set", "eval_episodes=2",
              "--set", "hidden_sizes=[16]", "--set", f"checkpoint_dir={tmp_path / 'ckpt'}",
              "--run-name", "resume-me", "--lambda", "0.2"]
    assert main("group-robust-ppo", common + ["--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "iter    2/2" in out and "mlflow ui --backend-store-uri" in out
    client = mlflow.MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("alloc-test").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["robust_lambda"] == "0.2"
    assert run.data.tags[TAG_CHECKPOINT].startswith(str(tmp_path / "ckpt"))
    assert "eval/return" in run.data.metrics

    assert main("group-robust-ppo", common + ["--iterations", "3", "--resume"]) == 0
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    assert runs[0].info.status == "FINISHED"
    for key in ("training_iteration", "group_gap", "return_mean"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [1, 2, 3], key
    iters = [m.value for m in client.get_metric_history(run.info.run_id, "training_iteration")]
    assert sorted(iters) == [1.0, 2.0, 3.0]


def test_resume_without_a_checkpointed_run_is_usage_error(toy, mlflow_uri, monkeypatch, capsys):
    """--resume with nothing to resume: exit 2 before any MLflow run or Ray exists."""
    from platform import cluster
    from platform.allocation.train import main
    from platform.cli import run_main

    import mlflow

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    argv = ["--tracking-uri", mlflow_uri, "--experiment", "alloc-none", "--scenario", TOY,
            "--run-name", "never-ran", "--resume"]
    assert run_main(lambda a: main("group-robust-ppo", a), argv) == 2
    err = capsys.readouterr().err
    assert "--resume: no run named 'never-ran' with a checkpoint" in err
    client = mlflow.MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("alloc-none")
    assert exp is None or client.search_runs([exp.experiment_id]) == []
