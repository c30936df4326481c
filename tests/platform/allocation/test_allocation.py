"""platform.allocation in-process: config validation, metrics, evaluation, train/resume.

A tiny two-group env (defined here) stands in for the hospital simulators so these tests
stay fast; the CLI tests in test_allocation_cli.py run the real simulators.
"""

from __future__ import annotations

import sys
from platform.allocation import scenarios
from platform.allocation.config import AllocationConfig

import gymnasium as gym
import numpy as np
import pytest

from base.config import build
from base.errors import ConfigError

TOY = "toy-two-group"


class ToyHospital(gym.Env):
    """Two groups (75% / 25% of arrivals); action 1 helps group 0, action 0 helps group 1.

    ``info["group"]`` every step; ``info["episode_metrics"]`` at the last step with a
    treatment-rate demographic-parity gap, like the hospital simulators.
    """

    def __init__(self, group_key: str = "age_group", horizon: int = 16, **_):
        self.horizon = horizon
        self.group_names = ["young", "old"]
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _arrive(self):
        self.g = int(self.np_random.random() < 0.25)
        obs = np.zeros(3, np.float32)
        obs[self.g], obs[2] = 1.0, self.np_random.uniform(-1, 1)
        return obs, {"group": self.g, "n_groups": 2}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.treated, self.seen = 0, np.zeros(2), np.zeros(2)
        return self._arrive()

    def step(self, action):
        g = self.g
        self.seen[g] += 1
        self.treated[g] += int(action)
        reward = float(int(action) == (1 - g)) * (1.0 if g == 0 else 0.5)
        self.t += 1
        obs, _ = self._arrive()
        info = {"group": g, "n_groups": 2}  # the group this decision concerned
        done = self.t >= self.horizon
        if done:
            rates = self.treated / np.maximum(self.seen, 1)
            info["episode_metrics"] = {
                "fairness/dp": float(abs(rates[0] - rates[1])),
                "group/young/treat_rate": float(rates[0]),
                "group/old/treat_rate": float(rates[1]),
            }
        return obs, reward, False, done, info


def _toy_creator(env_config):
    return ToyHospital(**env_config)


@pytest.fixture(scope="module")
def toy(ray_session):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    scenarios.register_scenario(TOY, _toy_creator, help="test env")
    return TOY


def _cfg(**kw) -> AllocationConfig:
    base = dict(scenario=TOY, num_env_runners=0, train_batch_size=128, minibatch_size=64,
                num_epochs=2, iterations=2, eval_episodes=3, checkpoint_every=1,
                hidden_sizes=[16])
    return build(AllocationConfig, {**base, **kw})


# ----------------------------------------------------------------------- validation
@pytest.mark.parametrize("field,value,message", [
    ("robust_lambda", 1.5, "allowed: a number in \\[0, 1\\]"),
    ("robust_lambda", -0.5, "allowed: a number in \\[0, 1\\]"),
    ("iterations", 0, "must be >= 1"),
    ("robust_mode", "median", "allowed: 'gap', 'worst_group'"),
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
    from platform.allocation.train import mlflow_params

    params = mlflow_params(_cfg(robust_lambda=0.2, robust_mode="worst_group"))
    assert params["algorithm"] == "group-robust-ppo" and params["scenario"] == TOY
    assert params["robust_lambda"] == 0.2 and params["robust_mode"] == "worst_group"
    assert len(params) <= 20
    ppo = mlflow_params(_cfg(algorithm="ppo", robust_lambda=0.2))
    assert ppo["robust_lambda"] == 0.0 and ppo["robust_mode"] == "none"


def test_build_algo_config_is_seeded_with_restarts(toy):
    from platform.allocation.train import build_algo_config

    from algorithms.group_robust_ppo import GroupRobustPPOConfig

    algo_cfg = build_algo_config(_cfg(seed=3, robust_lambda=0.4))
    assert isinstance(algo_cfg, GroupRobustPPOConfig)
    assert algo_cfg.seed == 3 and algo_cfg.restart_failed_env_runners
    assert algo_cfg.robust_lambda == 0.4 and algo_cfg.env == TOY
    assert type(build_algo_config(_cfg(algorithm="ppo"))).__name__ == "PPOConfig"


# ------------------------------------------------------------- metrics + evaluation
@pytest.fixture(scope="module")
def trained(toy):
    from platform.allocation.train import build_algo

    cfg = _cfg(seed=1)
    algo = build_algo(cfg)
    results = [algo.train() for _ in range(2)]
    yield cfg, algo, results
    algo.stop()


def test_iteration_metrics_are_namespaced(trained):
    from platform.allocation.train import iteration_metrics

    _, _, results = trained
    m = iteration_metrics(results[-1], ["young", "old"])
    assert m["training_iteration"] == 2.0
    for key in ("robust_loss", "group_gap", "return_mean", "env_steps_per_s", "fairness/dp",
                "group/young/objective", "group/old/objective", "group/young/advantage",
                "group/young/return", "group/old/return", "group/old/treat_rate", "loss/policy"):
        assert key in m, key
    assert all(np.isfinite(v) for v in m.values())
    assert m["group_gap"] == pytest.approx(abs(m["group/young/objective"] - m["group/old/objective"]))
    assert m["env_steps_per_s"] > 0 and m["env_steps_total"] >= 256
    # The per-group returns add up to the episode return (same episodes, same window).
    assert m["group/young/return"] + m["group/old/return"] == pytest.approx(m["return_mean"], rel=1e-6)
    assert "group/0/objective" in iteration_metrics(results[-1])


def test_evaluate_rows_seeds_and_determinism(trained):
    from platform.allocation.evaluate import evaluate

    cfg, algo, _ = trained
    df = evaluate(algo, cfg, 3, [cfg.eval_seed_base + i for i in range(3)])
    assert list(df["episode"]) == [0, 1, 2]
    assert list(df["seed"]) == cfg.eval_seeds(3) and min(df["seed"]) >= cfg.seed + 10_000
    assert {"return", "length", "fairness/dp", "group/young/return"} <= set(df.columns)
    assert (df["length"] == 16).all()
    assert df["return"].to_numpy() == pytest.approx(
        df.filter(regex=r"^group/.*/return$").sum(axis=1).to_numpy())
    again = evaluate(algo, cfg, 3, cfg.eval_seeds(3))
    assert df.equals(again)
    other = evaluate(algo, cfg, 3, [cfg.eval_seed_base + 100 + i for i in range(3)])
    assert not df["fairness/dp"].equals(other["fairness/dp"]) or not df["return"].equals(other["return"])


# ------------------------------------------------------------------ train + resume
@pytest.mark.timeout(300)
def test_main_logs_each_iteration_once_and_resume_continues(toy, mlflow_uri, tmp_path, capsys):
    from platform.allocation.train import TAG_CHECKPOINT, main

    import mlflow

    common = ["--tracking-uri", mlflow_uri, "--experiment", "alloc-test", "--scenario", TOY,
              "--set", "num_env_runners=0", "--set", "train_batch_size=128",
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
    for key in ("training_iteration", "robust_loss", "return_mean"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [1, 2, 3], key
    iters = [m.value for m in client.get_metric_history(run.info.run_id, "training_iteration")]
    assert sorted(iters) == [1.0, 2.0, 3.0]
