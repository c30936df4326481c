"""Rollout tokens/s: vLLM vs the HF ``generate`` backend, same model, same request, one run.

    # GPU (the docker image / the device tool), or CPU inside .venv-vllm:
    python -m benchmarks.gpu_rollout_throughput --device cuda
    .venv-vllm/bin/python -m benchmarks.gpu_rollout_throughput --device cpu

Builds the tiny text model of tests/vllm (Llama, head_dim 64) unless --model-path is given,
runs a warm-up and ``--repeats`` timed batches per backend, prints one JSON line per
backend and the vLLM/HF ratio measured in this run. Both backends at this size are
overhead-bound: the ratio says little about real models; use --model-path for those.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_model(dest: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "vllm"))
    from tiny_llama import build_tiny_llama

    return build_tiny_llama(dest)


def request(prompts: int, n: int, tokens: int, seed: int):
    from platform.clinical.generation import GenerationRequest

    msgs = [[{"role": "user", "content": f"Case {i}: chest radiograph, is there effusion?"}]
            for i in range(prompts)]
    return GenerationRequest(prompts=msgs, images=[None] * prompts, n=n, temperature=1.0,
                             max_new_tokens=tokens, seed=seed)


def measure(name: str, backend, args) -> dict:
    backend.generate(request(2, 2, 4, seed=0))  # warm-up (lazy init, kernels)
    rates, tokens = [], 0
    for r in range(args.repeats):
        start = time.perf_counter()
        res = backend.generate(request(args.prompts, args.n, args.max_new_tokens, seed=r + 1))
        seconds = time.perf_counter() - start
        rates.append(res.num_generated_tokens / seconds)
        tokens += res.num_generated_tokens
    out = {"backend": name, "device": args.device, "tokens_per_s": statistics.median(rates),
           "tokens": tokens, "repeats": args.repeats, "prompts": args.prompts, "n": args.n,
           "max_new_tokens": args.max_new_tokens}
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--model-path", default=None)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from platform.clinical.hf_backend import HFBackend
    from platform.clinical.vllm_backend import VLLMBackend

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_path or str(tiny_model(Path(tmp) / "tiny-llama"))
        hf = measure("hf", HFBackend(path, device=args.device, torch_threads=None), args)
        vllm = measure("vllm", VLLMBackend(path, device=args.device, dtype="float32",
                                           max_model_len=512,
                                           gpu_memory_utilization=args.gpu_memory_utilization),
                       args)
    print(json.dumps({"ratio_vllm_over_hf": vllm["tokens_per_s"] / hf["tokens_per_s"],
                      "device": args.device}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
