"""HospitalEnv: gymnasium contract, determinism, patient conservation, capacity, configs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from base.errors import ConfigError, UsageError
from envs.hospital import SCENARIOS, HospitalConfig, make_env
from envs.hospital.core import HospitalCore
from envs.hospital.metrics import metric_keys
from envs.hospital.registration import IDS

ALL_IDS = [*IDS, "Hospital-v0"]


def rollout(env, seed: int, n: int, policy_seed: int = 0):
    """(obs, rewards, infos) of ``n`` random-action steps from reset(seed)."""
    rng = np.random.default_rng(policy_seed)
    obs, info = env.reset(seed=seed)
    out_obs, rewards, infos = [obs], [], [info]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        out_obs.append(obs), rewards.append(r), infos.append(info)
        if term or trunc:
            obs, info = env.reset()
            out_obs.append(obs), infos.append(info)
    return np.array(out_obs), np.array(rewards), infos


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env_every_id(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert info["n_groups"] == len(env.unwrapped.group_names) == 3


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_seed_same_trajectory(scenario):
    a = rollout(make_env(scenario, max_decisions=60), seed=7, n=150)
    b = rollout(make_env(scenario, max_decisions=60), seed=7, n=150)
    c = rollout(make_env(scenario, max_decisions=60), seed=8, n=150)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert [i["group"] for i in a[2]] == [i["group"] for i in b[2]]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_conservation_and_capacity_every_step(scenario):
    env = make_env(scenario, max_decisions=300)
    beds = env.core.beds
    rng = np.random.default_rng(3)
    env.reset(seed=11)
    seen_admit = 0
    for _ in range(300):
        # bias towards admissions so that capacity binds
        a = int(rng.choice(5, p=[0.35, 0.15, 0.2, 0.15, 0.15]))
        _, r, _term, trunc, info = env.step(a)
        c = env.counts()
        assert c["arrived"] == c["discharged"] + c["died"] + c["transferred"] + c["in_system"]
        assert np.all(info["occupancy"] <= beds)
        assert np.all(env.core.occupancy()[0] <= beds)
        if info["treated"]:
            seen_admit += 1
            k = info["action"]
            assert a == k and info["occupancy"][k] <= info["capacity"][k]
        assert np.isfinite(r)
    assert trunc and "episode_metrics" in info
    assert seen_admit > 20 and c["discharged"] > 0


def test_info_and_metric_keys_exact():
    env = make_env("urban", max_decisions=40, group_key="age_group+sex")
    _, info = env.reset(seed=0)
    names = env.unwrapped.group_names
    assert names == [
        f"{a}-{s}" for a in ("pediatric", "adult", "elderly") for s in ("female", "male")
    ]
    assert env.observation_space.shape == (26 + 6 * 6,)
    for _ in range(40):
        _obs, _r, _term, trunc, info = env.step(3)
        assert 0 <= info["group"] < info["n_groups"] == 6
        assert ("episode_metrics" in info) == trunc
    m = info["episode_metrics"]
    assert list(m) == metric_keys(names)
    assert {
        "fairness/dp_score",
        "fairness/eo_score",
        "fairness/wte_score",
        "fairness/individual_score",
        "util/general",
        "util/icu",
        "util/pediatric",
        "util/staff",
        "group/adult-male/mean_wait",
        "group/elderly-female/success_rate",
        "group/pediatric-male/treat_rate",
        "group/adult-female/n",
        "wait/critical/elderly-male",
        "patients/arrived",
    } <= set(m)
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert sum(m[f"group/{g}/n"] for g in names) == m["patients/arrived"]


def test_group_index_matches_patient_attributes():
    env = make_env("urban", group_key="insurance+age_group", max_decisions=100)
    env.reset(seed=4)
    for _ in range(100):
        pid = env.core.cur_pid[0]
        ins, age = env.core.p["ins"][0, pid], env.core.p["age"][0, pid]
        _, _, _, _, info = env.step(3)
        assert env.unwrapped.group_names[info["group"]] == (
            f"{('private', 'public', 'uninsured')[ins]}-{('pediatric', 'adult', 'elderly')[age]}"
        )


def test_critical_patients_wait_less_under_triage_policy():
    """A severity-aware policy must show up in the severity-stratified waits."""
    env = make_env("urban", max_decisions=400)
    env.reset(seed=5)
    done = False
    while not done:
        sev = int(np.argmax(env.core.observe()[0][:3]))
        action = {0: 3, 1: 0, 2: 1}[sev] if env.core.decisions[0] % 3 else 3
        action = 1 if sev == 2 else action
        *_, trunc, info = env.step(action)
        done = trunc
    m = info["episode_metrics"]
    assert m["wait/critical/adult"] < m["wait/routine/adult"]


def test_yaml_config_and_hospital_v0(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("scenario: rural\nbeds: {general: 10}\nmax_decisions: 25\ngroup_key: sex\n")
    cfg = HospitalConfig.from_yaml(path)
    assert cfg.beds.general == 10 and cfg.beds.icu == SCENARIOS["rural"].beds.icu
    assert cfg.age_mix == SCENARIOS["rural"].age_mix
    env = gym.make("Hospital-v0", config=str(path))
    assert env.unwrapped.group_names == ["female", "male"]
    env.reset(seed=0)
    for i in range(25):
        *_, trunc, _ = env.step(4)
    assert trunc
    env2 = gym.make("Hospital-v0", config=HospitalConfig(max_decisions=5))
    assert env2.unwrapped.config.max_decisions == 5


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"beds": {"general": -1}}, "beds.general"),
        ({"age_mix": {"pediatric": 0.5, "adult": 0.5, "elderly": 0.5}}, "age_mix"),
        ({"severity_mix": {"routine": 0.9}}, "severity_mix"),
        ({"max_decisions": 0}, "max_decisions"),
        ({"group_key": "age_group+race"}, "group_key"),
        ({"beds": {"general": 0, "icu": 0, "pediatric": 0}}, "beds.general"),
        ({"arrival_rate": 0}, "arrival_rate"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config_names_field_and_builds_nothing(monkeypatch, kwargs, field):
    built = []
    monkeypatch.setattr(HospitalCore, "_alloc", lambda self: built.append(self))
    with pytest.raises(ConfigError) as exc:
        make_env("urban", **kwargs)
    assert exc.value.field == field and field.split(".")[-1] in str(exc.value)
    with pytest.raises(ConfigError):
        gym.make("HospitalUrban-v0", **kwargs)
    assert built == []


def test_unknown_scenario_lists_allowed():
    with pytest.raises(UsageError) as exc:
        make_env("martian")
    msg = str(exc.value)
    assert "scenario" in msg and all(n in msg for n in ("urban", "rural", "pediatric", "surge"))


def test_proportions_error_message_is_clear():
    with pytest.raises(ConfigError, match=r"age_mix: proportions must sum to 1, got 1\.5"):
        HospitalConfig.from_dict({"age_mix": {"pediatric": 0.5, "adult": 0.5, "elderly": 0.5}})


def test_arrivals_follow_the_daily_cycle():
    """Exact NHPP inversion: arrivals per hour of day follow the configured intensity."""
    env = make_env("urban", daily_amplitude=0.6, peak_hour=14.0)
    core = env.core
    rng = np.random.default_rng(0)
    t = np.zeros(2000)
    times = []
    for _ in range(300):  # ~120 h per chain; count the first 4 whole days only
        t = core._next_arrival_time(t, rng.random(t.size), np.ones(t.size))
        times.append(t)
    times = np.concatenate(times)
    assert t.min() > 96
    counts = np.bincount(np.floor(times[times < 96] % 24).astype(int), minlength=24)
    expected = core.lam * 4 * t.size  # intensity x 4 days x chains
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert counts[14] > 3 * counts[2]  # (1 + 0.6) / (1 - 0.6) = 4 at peak vs trough
    assert counts.sum() / (96 * t.size) == pytest.approx(2.5, rel=0.02)  # mean rate per hour


def test_deferring_everyone_costs_lives_and_admitting_saves_them():
    results = {}
    for name, action in (("defer", 3), ("admit", None)):
        env = make_env("surge", max_decisions=400)
        obs, _ = env.reset(seed=2)
        trunc = False
        while not trunc:
            a = action if action is not None else (1 if obs[2] else (2 if obs[4] else 0))
            obs, _, _, trunc, info = env.step(a)
        results[name] = info["episode_metrics"]
    d, a = results["defer"], results["admit"]
    assert d["patients/admitted"] == 0 and d["patients/deteriorated"] > 0 and d["patients/died"] > 0
    assert a["patients/admitted"] > 50
    assert d["patients/died"] / d["patients/arrived"] > a["patients/died"] / a["patients/arrived"]
    assert d["fairness/dp_score"] == 1.0  # nobody treated: parity holds trivially


def test_surge_and_maintenance_change_capacity():
    env = make_env("surge", max_decisions=300)
    env.reset(seed=0)
    caps = []
    for _ in range(300):  # transferring everyone: every decision is an arrival, ~140 h
        caps.append(env.step(4)[4]["capacity"])
    caps = np.array(caps)
    assert {70, 56} <= set(caps[:, 0].tolist())  # general beds: 70, x 0.8 during surges
    assert caps[:, 1].min() < 20  # ICU limited by surge closures or equipment maintenance


@pytest.mark.parametrize("occupancy, los, expected", [(0.0, 24.0, 0.0), (1.0, 1e7, 1.0)])
def test_utilisation_empty_and_full_hospital(occupancy, los, expected):
    """Transfer everyone: an empty hospital stays at 0 % use, a full one with endless stays at 100 %."""
    env = make_env("urban", initial_occupancy=occupancy, los_base_hours=los, max_decisions=50)
    env.reset(seed=0)
    for _ in range(50):
        *_, info = env.step(4)
    m = info["episode_metrics"]
    for k in ("general", "icu", "pediatric"):
        assert m[f"util/{k}"] == pytest.approx(expected, abs=1e-9)
    assert (m["util/staff"] == 0.0) if expected == 0 else (m["util/staff"] > 0.5)


def test_shipped_example_yaml_builds(repo_root):
    path = repo_root / "envs/hospital/examples/community.yaml"
    env = gym.make("Hospital-v0", config=str(path))
    cfg = env.unwrapped.config
    assert cfg.name == "community" and cfg.beds.total() == 60 and cfg.rewards.wait_per_hour == 0.03
    assert cfg.severity_mix == SCENARIOS["rural"].severity_mix  # inherited from the preset
    assert len(env.unwrapped.group_names) == 9
    check_env(env.unwrapped, skip_render_check=True)
