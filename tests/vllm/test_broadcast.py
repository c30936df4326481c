"""The broadcast weight-sync protocol of the GPU path, run on CPU with gloo.

Same code as on GPUs (``init_broadcast_group`` / ``BroadcastSender`` on the learner,
``WeightSyncWorkerExtension`` inside the vLLM worker) except the transport: gloo instead
of NCCL. The engine runs in this process (in-process engine core); the learner's rank 0
sends from a thread, as a learner actor would from its own process.
"""

from __future__ import annotations

import socket
import threading

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gloo_broadcast_into_vllm_worker_extension(backend_kwargs, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from platform.clinical.generation import GenerationRequest
    from platform.clinical.vllm_backend import VLLMBackend
    from platform.clinical.weight_sync import BroadcastSender, tensor_specs

    engine = VLLMBackend(**backend_kwargs)
    learner = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    prompt = [[{"role": "user", "content": "The chest radiograph shows"}]]
    greedy = GenerationRequest(prompts=prompt, images=[None], n=1, temperature=0.0,
                               max_new_tokens=6, seed=0)
    before = engine.generate(greedy)
    checksum = engine.weights_checksum()

    port, sender, errors = free_port(), BroadcastSender(), []

    def learner_side(fn):
        try:
            fn()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=learner_side, daemon=True,
                         args=(lambda: sender.init("127.0.0.1", port, 2, "gloo", 60),))
    t.start()
    assert engine.init_weight_group("127.0.0.1", port, 1, 2, "gloo", 60) == [1]
    t.join(60)
    assert not errors and not t.is_alive()

    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if name.startswith("lm_head"):
                p.add_(torch.randn(p.shape, generator=gen))
    named = list(learner.named_parameters())
    t = threading.Thread(target=learner_side, args=(lambda: sender.send(named),), daemon=True)
    t.start()
    assert engine.receive_weights(tensor_specs(named)) == len(named)
    t.join(60)
    assert not errors and not t.is_alive()

    assert engine.weights_checksum() != pytest.approx(checksum)
    after = engine.generate(greedy)
    assert after.token_ids != before.token_ids
    ids = torch.tensor([after.prompt_token_ids[0]])
    with torch.no_grad():
        ref = learner.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=6, pad_token_id=0)[0, ids.shape[1]:].tolist()
    assert after.token_ids[0][0] == ref[:len(after.token_ids[0][0])]
