"""Episode metrics: formulas on hand-made logs and vectorised code vs slow loops."""

from __future__ import annotations

import numpy as np
import pytest

from envs.hospital.metrics import episode_metrics, individual_fairness, metric_keys


def make_log(group, severity, treated, success, wait, acuity=None, names=("a", "b")):
    n = len(group)
    return {
        "group_names": list(names),
        "group": np.asarray(group),
        "severity": np.asarray(severity),
        "acuity": np.linspace(0, 1, n) if acuity is None else np.asarray(acuity),
        "treated": np.asarray(treated, bool),
        "success": np.asarray(success, bool),
        "wait": np.asarray(wait, float),
        "bed_hours": np.array([50.0, 10.0, 0.0]),
        "beds": np.array([100.0, 40.0, 0.0]),
        "staff_busy_hours": 30.0,
        "staff_hours": 60.0,
        "counts": dict.fromkeys(
            (
                "arrived",
                "admitted",
                "discharged",
                "died",
                "transferred",
                "in_system",
                "deteriorated",
                "invalid",
            ),
            1,
        ),
    }


def test_hand_computed_values():
    # group a: 4 patients, 3 treated, 3 successes; group b: 2 patients, 1 treated, 0 successes
    log = make_log(
        group=[0, 0, 0, 0, 1, 1],
        severity=[0, 0, 2, 2, 0, 2],
        treated=[1, 1, 1, 0, 1, 0],
        success=[1, 1, 1, 0, 0, 0],
        wait=[1, 1, 2, 4, 6, 6],
    )
    m = episode_metrics(log)
    assert list(m) == metric_keys(["a", "b"])
    p = 4 / 6  # overall treat rate
    assert m["fairness/dp_score"] == pytest.approx(1 - max(abs(0.75 - p), abs(0.5 - p)))
    ps = 3 / 4  # overall success among treated
    assert m["fairness/eo_score"] == pytest.approx(1 - max(abs(1 - ps), abs(0 - ps)))
    means = np.array([2.0, 6.0])
    assert m["fairness/wte_score"] == pytest.approx(1 - means.std() / means.mean())
    assert m["group/a/mean_wait"] == 2.0 and m["group/b/treat_rate"] == 0.5
    assert m["group/a/success_rate"] == 1.0 and m["group/b/n"] == 2.0
    assert m["wait/critical/a"] == 3.0 and m["wait/routine/b"] == 6.0 and m["wait/urgent/a"] == 0.0
    assert m["util/general"] == 0.5 and m["util/icu"] == 0.25 and m["util/pediatric"] == 0.0
    assert m["util/staff"] == 0.5


def test_perfectly_fair_episode_scores_one():
    log = make_log([0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [3, 3, 5, 5])
    m = episode_metrics(log)
    assert m["fairness/dp_score"] == 1.0 and m["fairness/eo_score"] == 1.0
    assert m["fairness/wte_score"] == 1.0


def test_empty_group_is_left_out_and_reported_zero():
    log = make_log([0, 0], [0, 1], [1, 0], [1, 0], [1, 2], names=("a", "b", "c"))
    m = episode_metrics(log)
    assert m["group/c/n"] == 0.0 and m["group/c/mean_wait"] == 0.0
    assert m["fairness/dp_score"] == 1.0 and m["fairness/wte_score"] == 1.0


def slow_individual(severity, acuity, treated, k=5):
    errs = []
    for i in range(len(severity)):
        same = [j for j in range(len(severity)) if j != i and severity[j] == severity[i]]
        if not same:
            continue
        near = sorted(same, key=lambda j: abs(acuity[j] - acuity[i]))[: min(k, len(same))]
        errs.append(abs(treated[i] - np.mean([treated[j] for j in near])))
    return 1.0 - float(np.mean(errs)) if errs else 1.0


@pytest.mark.parametrize("seed", range(5))
def test_individual_fairness_matches_brute_force_knn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    sev, acu, tr = rng.integers(0, 3, n), rng.random(n), rng.random(n) < 0.5
    assert individual_fairness(sev, acu, tr) == pytest.approx(slow_individual(sev, acu, tr))


def test_individual_fairness_penalises_treating_twins_differently():
    acu = np.repeat(np.linspace(0, 1, 50), 2)  # twins: equal clinical features
    sev = np.zeros(100, int)
    same = np.repeat(np.arange(50) % 2 == 0, 2)  # twins decided alike, alternating blocks
    split = np.tile([True, False], 50)  # one twin treated, the other not
    assert individual_fairness(sev, acu, same, k=1) == 1.0
    assert individual_fairness(sev, acu, split, k=1) == 0.0
