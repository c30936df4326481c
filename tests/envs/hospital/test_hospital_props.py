"""Property tests over random valid hospital configs: finite values and invariants hold."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.hospital import HospitalConfig
from envs.hospital.env import HospitalEnv
from envs.hospital.metrics import metric_keys


@st.composite
def shares(draw, n: int = 3):
    w = np.array(draw(st.lists(st.integers(0, 10), min_size=n, max_size=n)), float)
    if w.sum() == 0:
        w[draw(st.integers(0, n - 1))] = 1.0
    w = w / w.sum()
    w[-1] = 1.0 - w[:-1].sum()
    return [float(x) for x in np.maximum(w, 0.0)]


@st.composite
def configs(draw):
    beds = draw(st.lists(st.integers(0, 25), min_size=3, max_size=3).filter(lambda b: sum(b) >= 1))
    names3 = lambda keys, w: dict(zip(keys, w))
    data = {
        "beds": names3(("general", "icu", "pediatric"), beds),
        "staff": draw(st.integers(1, 60)),
        "staff_mix": names3(("general", "icu", "pediatric"), draw(shares())),
        "age_mix": names3(("pediatric", "adult", "elderly"), draw(shares())),
        "severity_mix": names3(("routine", "urgent", "critical"), draw(shares())),
        "insurance_mix": names3(("private", "public", "uninsured"), draw(shares())),
        "female_share": draw(st.floats(0, 1)),
        "group_key": draw(
            st.sampled_from(
                ["age_group", "sex", "insurance", "age_group+sex", "sex+insurance+age_group"]
            )
        ),
        "arrival_rate": draw(st.floats(0.05, 8.0)),
        "daily_amplitude": draw(st.floats(0.0, 0.95)),
        "transport_hours": draw(st.floats(0.0, 6.0)),
        "equipment": draw(st.integers(0, 12)),
        "budget": draw(st.floats(1.0, 5000.0)),
        "surge_per_day": draw(st.one_of(st.just(0.0), st.floats(0.01, 4.0))),
        "surge_capacity_mult": draw(st.floats(0.1, 1.0)),
        "initial_occupancy": draw(st.floats(0.0, 1.0)),
        "queue_capacity": draw(st.integers(1, 10)),
        "max_decisions": draw(st.integers(1, 60)),
    }
    return HospitalConfig.from_dict(data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), seed=st.integers(0, 2**31 - 1), policy=st.integers(0, 2**31 - 1))
def test_random_configs_keep_invariants(cfg, seed, policy):
    env = HospitalEnv(config=cfg)
    rng = np.random.default_rng(policy)
    obs, info = env.reset(seed=seed)
    beds = env.core.beds
    episodes = 0
    for _ in range(cfg.max_decisions + 3):
        assert env.observation_space.contains(obs) and np.all(np.isfinite(obs))
        obs, r, term, trunc, info = env.step(int(rng.integers(5)))
        assert np.isfinite(r) and not term
        assert 0 <= info["group"] < info["n_groups"] == len(cfg.group_names)
        c = env.counts()
        assert c["arrived"] == c["discharged"] + c["died"] + c["transferred"] + c["in_system"]
        assert np.all(info["occupancy"] <= beds) and np.all(info["capacity"] <= beds)
        if info["treated"]:
            assert info["occupancy"][info["action"]] <= info["capacity"][info["action"]]
        if trunc:
            m = info["episode_metrics"]
            assert list(m) == metric_keys(env.group_names)
            assert all(np.isfinite(v) for v in m.values())
            assert all(
                0 <= m[k] <= 1
                for k in ("fairness/dp_score", "fairness/eo_score", "fairness/individual_score")
            )
            assert m["fairness/wte_score"] <= 1
            episodes += 1
            obs, info = env.reset()
    assert episodes >= 1
