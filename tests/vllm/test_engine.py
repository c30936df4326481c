"""vLLM CPU engine behind the rollout interface, in a Ray rollout worker (tiny Llama, head_dim 64).

Checks against an independent reference: the same weights in transformers. Run with
``.venv-vllm/bin/python -m pytest tests/vllm`` (see conftest.py).
"""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPTS = [
    [{"role": "user", "content": "The chest radiograph shows"}],
    [{"role": "system", "content": "Answer yes or no."},
     {"role": "user", "content": [{"type": "text", "text": "Is there pleural effusion?"}]}],
]


def request(n=3, temperature=1.0, seed=7, max_new_tokens=8, prompts=PROMPTS):
    from platform.clinical.generation import GenerationRequest

    return GenerationRequest(prompts=prompts, images=[None] * len(prompts), n=n,
                             temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


def hf_model(path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hf_token_logprobs(model, prompt_ids, completion, temperature, suppressed=()):
    """log softmax(logits / T) of each completion token given the prompt (reference), with
    the never-sampled special tokens masked out as both backends do."""
    import torch

    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    logits[:, list(suppressed)] = float("-inf")
    lp = torch.log_softmax(logits / temperature, dim=-1)
    return lp.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def hf_greedy(model, prompt_ids, max_new_tokens):
    import torch

    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def test_generation_shapes_seeds_and_sampling_logprobs(engine_pool, tiny_llama):
    res = engine_pool.generate(request())
    assert len(res.texts) == len(res.token_ids) == len(res.logprobs) == 2
    for toks, lps, texts in zip(res.token_ids, res.logprobs, res.texts):
        assert len(toks) == len(lps) == len(texts) == 3
        for t, lp in zip(toks, lps):
            assert 1 <= len(t) == len(lp) <= 8
            assert all(math.isfinite(x) and x <= 0 for x in lp)
    assert res.num_generated_tokens == sum(len(t) for p in res.token_ids for t in p)
    # G samples of one prompt differ; the same seed reproduces them; another seed does not.
    assert len({tuple(t) for t in res.token_ids[0]}) > 1
    assert engine_pool.generate(request()).token_ids == res.token_ids
    assert engine_pool.generate(request(seed=8)).token_ids != res.token_ids

    # Prompt ids come from the chat template (system + user turns, generation prompt).
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    text = tok.apply_chat_template([{"role": "system", "content": "Answer yes or no."},
                                    {"role": "user", "content": "Is there pleural effusion?"}],
                                   add_generation_prompt=True, tokenize=False)
    assert res.prompt_token_ids[1] == tok(text, add_special_tokens=False)["input_ids"]

    # Sampling logprobs = log softmax(logits / T) of the sampled token (transformers reference).
    from platform.clinical.models import suppressed_token_ids

    model = hf_model(tiny_llama)
    hot = engine_pool.generate(request(n=2, temperature=0.7, seed=3))
    for p, prompt_ids in enumerate(hot.prompt_token_ids):
        for toks, lps in zip(hot.token_ids[p], hot.logprobs[p]):
            ref = hf_token_logprobs(model, prompt_ids, toks, 0.7, suppressed_token_ids(tok))
            assert lps == pytest.approx(ref, abs=2e-3)


def test_weight_update_from_learner_changes_greedy_output(engine_pool, tiny_llama):
    import torch

    greedy = request(n=1, temperature=0.0, max_new_tokens=6)
    before = engine_pool.generate(greedy)
    learner = hf_model(tiny_llama)
    assert before.token_ids[0][0] == hf_greedy(learner, before.prompt_token_ids[0], 6)[:len(before.token_ids[0][0])]

    # The "learner update": a large change of the output head and the last MLP.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if name.startswith("lm_head") or "layers.1.mlp" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    engine_pool.load_weights([(n, p.detach().clone()) for n, p in learner.named_parameters()],
                             version=1)

    after = engine_pool.generate(greedy)
    assert after.token_ids != before.token_ids
    for p, prompt_ids in enumerate(after.prompt_token_ids):
        expect = hf_greedy(learner, prompt_ids, 6)
        assert after.token_ids[p][0] == expect[:len(after.token_ids[p][0])]


def test_dead_engine_is_restarted_with_current_weights(engine_pool):
    """Kill the engine's worker process while it generates: the pool waits for Ray's restart,
    re-sends the weights and retries the shard; the call returns what it would have (the same
    seeds and weights give the same samples)."""
    import os
    import signal
    import threading
    import time

    import ray

    greedy = request(n=1, temperature=0.0, max_new_tokens=6)
    current = engine_pool.generate(greedy)
    version = ray.get(engine_pool.workers[0].version.remote())
    assert version >= 1, "runs after the weight-update test: the engine must hold updated weights"
    # grow the call until it takes >= 1.5 s, so a kill at a fraction of that lands mid-call
    prompts, took = PROMPTS, 0.0
    while True:
        long = request(n=16, temperature=1.0, seed=5, max_new_tokens=200, prompts=prompts)
        start = time.perf_counter()
        expected = engine_pool.generate(long)
        took = time.perf_counter() - start
        if took >= 1.5 or len(prompts) >= 64:
            break
        prompts = prompts * 2
    pid, restarts = engine_pool.pids()[0], engine_pool.restarts
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("result", engine_pool.generate(long)))
    t.start()
    time.sleep(min(0.25 * took, 1.0))
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=400)
    assert "result" in out, "generate did not return after the engine was killed"
    assert engine_pool.restarts == restarts + 1, "the kill did not land while the call was in flight"
    assert engine_pool.pids()[0] != pid
    assert ray.get(engine_pool.workers[0].version.remote()) == version
    assert out["result"].token_ids == expected.token_ids  # no sequence lost, same tokens
    assert engine_pool.generate(greedy).token_ids == current.token_ids