"""One FairGRPO step end to end with a vLLM rollout worker (Ray actor, CPU build).

rollout (vLLM, sampling logprobs) -> reward -> advantage (``algorithms.advantages``, the
project's estimator) -> learner update -> weight sync (object store -> reload_weights).
The vLLM environment has no DeepSpeed/MLflow, so the learner here is a plain torch PPO-clip
step on the transformers copy of the same model (the DeepSpeed learners are tested in the
main environment); everything else is the production path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

GROUPS = ["F|26-50", "M|51-75", "F|>75", "M|<=25"]


def token_logprobs(model, prompt_ids, completion, suppressed):
    """Sum-able per-token log p(token) at temperature 1 with suppressed ids masked (grad)."""
    import torch

    ids = torch.tensor([prompt_ids + completion])
    logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    logits[:, suppressed] = float("-inf")
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def test_fairgrpo_step_with_vllm_rollout_worker(engine_pool, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from algorithms.advantages import PromptMeta, get_estimator
    from platform.clinical.models import suppressed_token_ids
    from platform.clinical.generation import GenerationRequest
    from platform.clinical.weight_sync import METRIC_SYNC_SECONDS, sync_via_object_store

    learner = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    suppressed = suppressed_token_ids(AutoTokenizer.from_pretrained(tiny_llama))
    workers = {f"rollout-worker-{i}": w for i, w in enumerate(engine_pool.workers)}
    # Start on-policy: the engine gets the learner's weights (earlier tests changed them).
    sync_via_object_store(workers, learner.named_parameters(), version=10, timeout_s=120)

    # rollout
    prompts = [[{"role": "user", "content": f"Case {i}: is there pleural effusion?"}]
               for i in range(4)]
    req = GenerationRequest(prompts=prompts, images=[None] * 4, n=4, temperature=1.0,
                            max_new_tokens=6, seed=11)
    res = engine_pool.generate(req)

    # reward: share of generated tokens with an even id (a verifiable stand-in for accuracy)
    completions = [(p, g) for p in range(4) for g in range(4)]
    rewards = np.array([np.mean([t % 2 == 0 for t in res.token_ids[p][g]]) for p, g in completions])
    index = np.array([p for p, _ in completions])
    meta = PromptMeta(data_source=["chest"] * 4, group=GROUPS, prompt_id=[f"c{i}" for i in range(4)])
    estimator = get_estimator("fair_grpo")
    adv = estimator(rewards, index, meta, estimator.init_state()).advantages
    assert adv.shape == (16,) and np.isfinite(adv).all() and np.abs(adv).max() > 0

    # learner update: PPO-clip with old logprobs = the engine's sampling logprobs
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    new_lp = [token_logprobs(learner, res.prompt_token_ids[p], res.token_ids[p][g], suppressed)
              for p, g in completions]
    old_lp = [torch.tensor(res.logprobs[p][g]) for p, g in completions]
    for new, old in zip(new_lp, old_lp):  # on-policy: ratio 1 before the update
        assert torch.allclose(new.detach(), old, atol=2e-3)
    ratios = [torch.exp(new - old) for new, old in zip(new_lp, old_lp)]
    a = torch.tensor(adv, dtype=torch.float32)
    loss = -torch.stack([torch.minimum(r * a[k], r.clamp(0.8, 1.2) * a[k]).mean()
                         for k, r in enumerate(ratios)]).mean()
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(before[n], p) for n, p in learner.named_parameters())

    # the update moved probability towards positive-advantage completions
    with torch.no_grad():
        after = [token_logprobs(learner, res.prompt_token_ids[p], res.token_ids[p][g], suppressed)
                 for p, g in completions]
    gain = sum(float(a[k]) * float((after[k] - old_lp[k]).sum()) for k in range(16))
    assert gain > 0

    # weight sync -> the engine now samples from the updated policy
    result, _ = sync_via_object_store(workers, learner.named_parameters(), version=11,
                                      timeout_s=120)
    assert result.num_tensors == len(before) and result.seconds > 0
    assert result.metrics()[METRIC_SYNC_SECONDS] == result.seconds
    again = engine_pool.generate(req)
    for k, (p, g) in enumerate(completions[:4]):
        new = token_logprobs(learner, again.prompt_token_ids[p], again.token_ids[p][g], suppressed)
        assert torch.allclose(new.detach(), torch.tensor(again.logprobs[p][g]), atol=2e-3)
