"""HospitalVectorEnv equals gymnasium's SyncVectorEnv over N single envs on the same seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from envs.hospital import make_vector_env
from envs.hospital.vector import HospitalVectorEnv

INFO_KEYS = (
    "group",
    "n_groups",
    "severity",
    "action",
    "treated",
    "success",
    "transferred",
    "invalid",
    "wait",
    "occupancy",
    "capacity",
    "reward_by_group",
    "reward_shared",
)


@pytest.mark.parametrize("env_id", ["HospitalSurge-v0", "HospitalRural-v0"])
def test_vector_equals_sync_vector_of_singles(env_id):
    n, kw = 5, {"max_decisions": 37}  # several autoresets within the run
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kw)
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(vec, HospitalVectorEnv)
    assert vec.observation_space == sync.observation_space
    o1, _i1 = sync.reset(seed=21)
    o2, _i2 = vec.reset(seed=21)
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(1)
    ends = 0
    for t in range(120):
        a = rng.integers(0, 5, n)
        r1, r2 = sync.step(a), vec.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y, err_msg=f"step {t}")
        for k in INFO_KEYS:
            np.testing.assert_array_equal(r1[4][k], r2[4][k], err_msg=f"step {t} info {k}")
            np.testing.assert_array_equal(r1[4][f"_{k}"], r2[4][f"_{k}"])
        assert ("episode_metrics" in r1[4]) == ("episode_metrics" in r2[4])
        if "episode_metrics" in r1[4]:
            ends += 1
            m1, m2 = r1[4]["episode_metrics"], r2[4]["episode_metrics"]
            assert set(m1) == set(m2)
            for k in m1:  # bed-hour sums may differ in the last bit (BLAS summation order)
                np.testing.assert_allclose(m1[k], m2[k], rtol=1e-12, err_msg=k)
    assert ends >= 3


def test_vector_equals_individually_seeded_singles_with_seed_list():
    seeds = [3, 99, 3]
    vec = make_vector_env("urban", 3, max_decisions=30)
    obs, _ = vec.reset(seed=seeds)
    np.testing.assert_array_equal(obs[0], obs[2])
    singles = [gym.make("HospitalUrban-v0", max_decisions=30) for _ in seeds]
    first = [e.reset(seed=s)[0] for e, s in zip(singles, seeds)]
    np.testing.assert_array_equal(obs, np.stack(first))
    for _ in range(30):
        o, r, *_ = vec.step(np.array([0, 1, 4]))
        got = [e.step(a)[:2] for e, a in zip(singles, (0, 1, 4))]
        np.testing.assert_array_equal(o, np.stack([g[0] for g in got]))
        np.testing.assert_array_equal(r, [g[1] for g in got])
