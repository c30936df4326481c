"""The GRPO family on the clinical pipeline without Ray: algorithm presets, new options'
errors, partially known group keys, the dynamic-sampling stage and the overlong penalty (on a
driver whose rollouts are canned), rollout log-probs aligned with the learner's."""

from __future__ import annotations

from platform.clinical.config import ALGORITHMS, ClinicalConfig
from platform.clinical.driver import Pipeline, Step, training_groups
from platform.clinical.generation import GenerationResult

import numpy as np
import pandas as pd
import pytest

from base.config import build, help_text, tracked_params
from base.errors import ConfigError


@pytest.mark.parametrize("algorithm,estimator,spec", [
    ("fairgrpo", "fair_grpo", {"policy_loss": "ppo", "agg": "token-mean", "clip_low": 0.2, "clip_high": 0.2}),
    ("dr-grpo", "dr_grpo", {"agg": "seq-mean-token-sum-norm", "norm_len": 16}),
    ("dapo", "grpo", {"agg": "token-mean", "clip_low": 0.2, "clip_high": 0.28}),
    ("gspo", "grpo", {"policy_loss": "gspo", "agg": "seq-mean-token-mean", "clip_low": 3e-4, "clip_high": 4e-4}),
])
def test_algorithm_presets(algorithm, estimator, spec):
    cfg = build(ClinicalConfig, {"algorithm": algorithm})
    assert cfg.estimator == estimator
    got = cfg.loss_spec()
    assert {k: getattr(got, k) for k in spec} == spec
    assert cfg.rollout.dynamic_sampling == (algorithm == "dapo")
    assert cfg.reward.overlong_buffer == (3 if algorithm == "dapo" else 0)  # 16 // 5
    params = tracked_params(cfg)
    assert params["learner.loss_agg"] == got.agg and params["learner.clip_eps_high"] == str(got.clip_high)


def test_explicit_values_beat_the_preset_and_fairness_composes():
    cfg = build(ClinicalConfig, {"algorithm": "dapo", "learner": {"clip_eps_high": 0.3, "loss_agg": "seq-mean-token-mean"},
                                 "rollout": {"dynamic_sampling": False},
                                 "advantage": {"fairness": "fairgrpo"}})
    assert (cfg.loss_spec().clip_high, cfg.loss_spec().agg) == (0.3, "seq-mean-token-mean")
    assert cfg.rollout.dynamic_sampling is False and cfg.estimator_key == "grpo+fairgrpo"
    assert build(ClinicalConfig, {"algorithm": "fairgrpo"}).estimator_key == "fair_grpo"


@pytest.mark.parametrize("data, field, words", [
    ({"learner": {"loss_agg": "token-sum"}}, "learner.loss_agg", "allowed: token-mean, seq-mean-token-mean"),
    ({"learner": {"policy_loss": "grpo"}}, "learner.policy_loss", "allowed: ppo, gspo"),
    ({"learner": {"tis_cap": 0.5}}, "learner.tis_cap", "0 (off) or >= 1"),
    ({"learner": {"dual_clip_c": 1.0}}, "learner.dual_clip_c", "0 (off) or > 1"),
    ({"learner": {"clip_eps_low": 1.5}}, "learner.clip_eps_low", "(0, 1)"),
    ({"learner": {"clip_eps_high": -0.1}}, "learner.clip_eps_high", "> 0"),
    ({"advantage": {"fairness": "fair"}}, "advantage.fairness", "allowed: fairgrpo, fairgrpo_nd, group_dro"),
    ({"advantage": {"estimator": "dapo"}}, "advantage.estimator", "allowed: dr_grpo"),
    ({"algorithm": "fairgrpo", "advantage": {"fairness": "group_dro"}}, "advantage.fairness",
     "allowed estimators: dr_grpo, grpo, reinforce_pp, rloo"),
    ({"reward": {"overlong_buffer": 17}}, "reward.overlong_buffer", "<= rollout.max_new_tokens (16)"),
    ({"reward": {"overlong_penalty": -1}}, "reward.overlong_penalty", ">= 0"),
    ({"rollout": {"max_gen_batches": 0}}, "rollout.max_gen_batches", ">= 1"),
    ({"data": {"partial_groups": "drop"}}, "data.partial_groups", "allowed: 'keep_known', 'unknown'"),
])
def test_new_option_errors_name_the_field(data, field, words):
    with pytest.raises(ConfigError) as exc:
        build(ClinicalConfig, data)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_cli_rejects_a_bad_option_with_exit_2(capsys):
    from platform.cli import run_main
    from platform.clinical.train import main

    assert run_main(lambda argv: main("dapo", argv), ["--set", "learner.loss_agg=mean"]) == 2
    assert "learner.loss_agg" in capsys.readouterr().err


def test_help_lists_every_algorithm_estimator_and_loss_mode():
    from platform.train import _help

    from algorithms.advantages import ESTIMATORS, WEIGHTINGS
    from algorithms.losses import LOSS_AGG_MODES, POLICY_LOSSES

    top = _help()
    assert all(name in top for name in ALGORITHMS)
    fields = help_text(ClinicalConfig)
    for word in (*ESTIMATORS.names(), *WEIGHTINGS.names(), *LOSS_AGG_MODES, *POLICY_LOSSES):
        assert word in fields, word


def test_partially_known_keys_keep_the_known_part():
    df = pd.DataFrame({"sex": ["F", None, None, "M"], "age": [30.0, 80.0, None, None]})
    assert training_groups(df, ["sex", "age_band"]) == ["F|26-50", "unknown|>75", "unknown", "M|unknown"]
    assert training_groups(df, ["sex", "age_band"], "unknown") == ["F|26-50", "unknown", "unknown", "unknown"]


# ------------------------------------------------------------------------------------------
# dynamic sampling on a driver with canned rollouts


class _Canned(Pipeline):
    """A Pipeline whose rollout returns canned rounds of 4 prompts x 3 completions; the reward
    is the completion text as a number; a completion "1" is correct."""

    def __init__(self, cfg, rounds):
        self.cfg, self.rounds, self.calls = cfg, list(rounds), []
        self.reward_fn = lambda comps, samples: np.array([float(c) for c in comps])
        self.accuracy_fn = lambda comps, samples: np.array([float(c == "1") for c in comps])

    def rollout(self, number, round_=0):
        self.calls.append(round_)
        texts, groups = self.rounds.pop(0)
        P = len(texts)
        tok = [[[7] * (1 + g) for g in range(len(t))] for t in texts]
        res = GenerationResult(texts, tok, [[[-0.5] * len(x) for x in p] for p in tok], [[1, 2]] * P,
                               sum(len(x) for p in tok for x in p), 0.1)
        return Step(number, list(range(P)), [{"id": f"r{round_}-{i}"} for i in range(P)], groups, res)


def _cfg(**rollout):
    return build(ClinicalConfig, {"algorithm": "dapo", "data": {"prompts_per_step": 4},
                                  "rollout": {"group_size": 3, **rollout}, "reward": {"overlong_buffer": 0}})


def test_dynamic_sampling_refills_and_counts_drops_per_group():
    """Round 0: minority prompts all-right and all-wrong, 2 majority prompts kept. Round 1:
    1 majority prompt all-wrong, 3 kept -> 5 kept, the first 4 trained on."""
    round0 = ([["1", "1", "1"], ["0", "0", "0"], ["1", "0", "0"], ["0", "1", "1"]], ["min", "min", "maj", "maj"])
    round1 = ([["0", "0", "0"], ["1", "0", "1"], ["0", "0", "1"], ["1", "1", "0"]], ["maj", "maj", "min", "maj"])
    pipe = _Canned(_cfg(), [round0, round1])
    step = pipe.rollout(1)
    step.rewards = pipe.reward(step)
    out = pipe.dynamic_sampling(step)
    assert pipe.calls == [0, 1]
    assert [r["id"] for r in out.rows] == ["r0-2", "r0-3", "r1-1", "r1-2"]
    assert out.rewards.tolist() == [1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1]
    assert out.groups == ["maj", "maj", "maj", "min"] and len(out.result.texts) == 4
    m = out.metrics
    assert m["filter/by_group/min/dropped"] == 2 and m["filter/by_group/min/all_correct"] == 1
    assert m["filter/by_group/min/all_wrong"] == 1 and m["filter/by_group/maj/dropped"] == 1
    assert m["filter/by_group/maj/all_wrong"] == 1 and m["filter/by_group/maj/all_correct"] == 0
    assert (m["filter/rounds"], m["filter/kept"], m["filter/trained_prompts"]) == (2, 5, 4)
    assert out.prompt_index.tolist() == np.repeat(np.arange(4), 3).tolist()


def test_dynamic_sampling_stops_after_max_gen_batches():
    all_same = ([["1", "1", "1"]] * 4, ["g"] * 4)
    pipe = _Canned(_cfg(max_gen_batches=2), [all_same, all_same])
    step = pipe.rollout(1)
    step.rewards = pipe.reward(step)
    out = pipe.dynamic_sampling(step)
    assert pipe.calls == [0, 1] and out.metrics["filter/kept"] == 0
    assert len(out.rows) == 4 and out.metrics["filter/by_group/g/dropped"] == 8  # last round, unfiltered


def test_overlong_penalty_in_the_reward_stage():
    """max_new_tokens 16, buffer 4: a 14-token completion costs (14 - 12) / 4 = 0.5."""
    cfg = build(ClinicalConfig, {"algorithm": "dapo", "reward": {"overlong_buffer": 4}})
    pipe = _Canned(cfg, [])
    res = GenerationResult([["1", "1"]], [[[7] * 12, [7] * 14]], [[[0.0] * 12, [0.0] * 14]], [[1]], 26, 0.1)
    step = Step(1, [0], [{"id": "a"}], ["g"], res)
    rewards = pipe.reward(step)
    assert rewards.tolist() == [1.0, 0.5] and step.scores.tolist() == [1.0, 1.0]
    assert step.metrics["reward/overlong_fraction"] == 0.5


def test_rollout_logprobs_align_with_the_learner_positions():
    """Token j of a completion after a prompt of length p is predicted at logit position
    p + j - 1 of the (B, L-1) log-prob matrix; the completion mask marks the same places."""
    from platform.clinical.learner import LearnerImpl, TrainBatch

    import torch

    impl = object.__new__(LearnerImpl)
    impl.device = torch.device("cpu")
    batch = TrainBatch(prompt_ids=[[1, 2, 3], [1]], completion_ids=[[5, 6], [7, 8, 9]],
                       advantages=[1.0, -1.0], images=[None, None],
                       rollout_logprobs=[[-0.1, -0.2], [-0.3, -0.4, -0.5]])
    out = impl._rollout_logp(batch, (2, 4))
    want = torch.tensor([[0, 0, -0.1, -0.2], [-0.3, -0.4, -0.5, 0]])
    torch.testing.assert_close(out, want)
    assert batch.counts() == (2.0, 5.0) and batch.take([1]).rollout_logprobs == [[-0.3, -0.4, -0.5]]
