"""Faro (arXiv 2602.07799): constrained Bradley-Terry reward models, calibration, reward factory.

Tolerances were measured on the synthetic biased-annotator data (bias 1.0, 1500 items, 15000
pairs, FaroConfig defaults: 300 steps, λ step 0.5, 1024 pairs and 256 items a step, ε = 0.05),
seeds 0/1/2, violations on the training items (these tests run seed 0):

=============  ======================  ===================  ============================
model          DP violation            CF violation         held-out ranking accuracy
=============  ======================  ===================  ============================
unconstrained  0.286 / 0.309 / 0.309   0.96 / 1.13 / 1.25   0.748 / 0.753 / 0.756
dp             0.030 / 0.013 / 0.064                        0.691 / 0.696 / 0.688
cf                                     0.035 / 0.036 / 0.048  0.723 / 0.729 / 0.742
=============  ======================  ===================  ============================

(The held-out labels come from the biased annotator, so removing the bias must cost some
accuracy against them.) Hence: DP <= ε + 0.03, CF <= ε + 0.02, both < 1/3 of unconstrained;
accuracy within 0.10 (dp) / 0.05 (cf) of the unconstrained model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.faro import (
    FaroConfig,
    calibration_report,
    counterfactual,
    expected_calibration_error,
    featurize_answers,
    fit_temperature,
    make_faro_reward,
    outcome_preferences,
    split_items,
    synthetic_preferences,
    train_faro,
    violations,
)
from base.errors import ConfigError, UsageError
from envs.cohorts import preference_items

EPS = 0.05
SEED = 0


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    data = synthetic_preferences(seed=SEED)
    train, cal, test = split_items(data, seed=SEED)
    out = {"split": (train, cal, test)}
    for name, cons in (("none", []), ("dp", ["dp"]), ("cf", ["cf"])):
        res = train_faro(train, FaroConfig(constraints=cons, epsilon=EPS, seed=SEED))
        out[name] = (res, calibration_report(res.model, cal, test),
                     violations(res.model, train, ["dp", "cf"]))
    return out


def test_constrained_violation_is_at_most_eps_plus_tolerance_and_far_below_unconstrained(trained):
    _, _, v_none = trained["none"]
    _, _, v_dp = trained["dp"]
    _, _, v_cf = trained["cf"]
    assert v_none["dp/1"] > 0.2 and v_none["cf"] > 0.5  # the annotator's bias was learned
    assert v_dp["dp/1"] <= EPS + 0.03
    assert v_dp["dp/1"] < v_none["dp/1"] / 3
    assert v_cf["cf"] <= EPS + 0.02
    assert v_cf["cf"] < v_none["cf"] / 3


def test_multipliers_stay_nonnegative_and_rise_on_violation(trained):
    for name in ("dp", "cf"):
        res = trained[name][0]
        assert res.lambda_history.shape == (300, 1)
        assert (res.lambda_history >= 0).all()
        assert res.lambda_history.max() > 0  # the constraint was active at some point
        # λ moves by exactly lambda_lr * (violation - ε), clipped at 0
        lam, viol = res.lambda_history[:, 0], res.violation_history[:, 0]
        expected = np.maximum(0.0, np.concatenate([[0.0], lam[:-1]]) + 0.5 * (viol - EPS))
        np.testing.assert_allclose(lam, expected, rtol=1e-9, atol=1e-12)


def test_ranking_accuracy_stays_within_measured_margin(trained):
    acc = {k: trained[k][1]["ranking_accuracy"] for k in ("none", "dp", "cf")}
    assert acc["none"] > 0.7
    assert acc["dp"] >= acc["none"] - 0.10, acc
    assert acc["cf"] >= acc["none"] - 0.05, acc


def test_calibration_ordinal_and_cardinal(trained):
    for name in ("none", "dp", "cf"):
        rep = trained[name][1]
        assert 0.5 < rep["auc"] <= 1 and rep["temperature"] > 0
        assert rep["ece_calibrated"] < 0.1  # measured 0.012-0.074
    # the temperature fit undoes a deliberate mis-scaling: rewards x3 -> s ~ 1/3 of the fit
    rng = np.random.default_rng(0)
    margins = rng.normal(0, 2, 20000)
    prefs = (rng.random(20000) < 1 / (1 + np.exp(-margins))).astype(float)
    assert fit_temperature(3 * margins, prefs) == pytest.approx(1 / 3, rel=0.05)
    over = 1 / (1 + np.exp(-3 * margins))
    assert expected_calibration_error(over, prefs) > 0.05
    s = fit_temperature(3 * margins, prefs)
    assert expected_calibration_error(1 / (1 + np.exp(-s * 3 * margins)), prefs) < 0.02


def test_counterfactual_swaps_the_group_block():
    x = torch.tensor([[1.0, 0.0, 1.0, 0.3], [0.0, 1.0, 0.0, 0.7]])
    out = counterfactual(x, (1, 2))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 0.0, 0.3], [0.0, 0.0, 1.0, 0.7]]))


def test_cohort_preferences_from_actg175_are_outcome_based():
    data = outcome_preferences(**preference_items("actg175", "race"), n_pairs=500, seed=0)
    a, b = data.pairs[:, 0], data.pairs[:, 1]
    preferred = np.where(data.prefs == 1, a, b)
    other = np.where(data.prefs == 1, b, a)
    assert (data.labels[preferred] == 1).all() and (data.labels[other] == 0).all()
    assert 0.4 < data.prefs.mean() < 0.6
    assert set(data.group_names) == {"non-white", "white"}
    assert [data.feature_names[c] for c in data.cf_columns] == ["race_non-white", "race_white"]
    assert {"arm_0", "arm_3"} <= set(data.feature_names)
    with pytest.raises(UsageError, match="allowed: race, gender"):
        preference_items("actg175", "religion")


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="constraints.*allowed: dp, eo, cf"):
        FaroConfig(constraints=["parity"])
    with pytest.raises(ConfigError, match="epsilon"):
        FaroConfig(epsilon=-1)


def test_make_faro_reward_scores_completions_and_ignores_sex():
    reward_fn = make_faro_reward(constraints="cf", epsilon=EPS, seed=SEED)
    sample = {"id": "s1", "options": ["pneumonia", "normal"], "answer": "normal", "age": 60.0}
    completions = ["<answer>B</answer>", "<answer>A</answer>", "B probably", "<answer>B</answer>"]
    samples = [dict(sample, sex="F"), dict(sample, sex="F"), dict(sample, sex="F"),
               dict(sample, sex="M")]
    rewards = reward_fn(completions, samples)
    assert rewards.shape == (4,) and rewards.dtype == np.float64
    assert rewards[0] > rewards[1] + 1.0  # correct >> wrong (annotator weight 2)
    assert rewards[0] > rewards[2]        # formatted beats unformatted
    # same answer, other sex: ~same reward (measured |diff| 0.029 / 0.040 at seeds 0 / 1, while
    # correct vs wrong differs by ~1.9-2.2 and the annotator's sex bias was 1.0)
    assert abs(rewards[3] - rewards[0]) < 0.15
    assert featurize_answers(completions[:1], samples[:1]).tolist() == [[1, 1, 1, 0, 0.6]] or \
        np.allclose(featurize_answers(completions[:1], samples[:1]), [[1, 1, 1, 0, 0.6]])
    with pytest.raises(UsageError, match="needs options, answer"):
        reward_fn(["<answer>A</answer>"], [{"id": "x"}])
