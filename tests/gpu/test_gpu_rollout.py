"""GPU checks of the vLLM rollout path (run with the device tool or on a cluster node).

    python -m pytest tests/gpu -m gpu -q          # in the GPU image (docker/Dockerfile)

* the tiny Gemma3 VLM (MedGemma's architecture) generating with images on vLLM (GPU);
* NCCL weight sync: learner rank 0 broadcasts into an engine; a stalled sync names the
  stuck worker (needs 2 GPUs: NCCL cannot put two ranks on one device);
* FairGRPO steps through the CLI with a DeepSpeed learner colocated with a vLLM engine on
  one GPU, and (2 GPUs) on dedicated GPUs with the driver's NCCL broadcast weight sync;
* (throughput: ``benchmarks/gpu_rollout_throughput.py --device cuda``).

Everything skips without CUDA or without vLLM in the engines' Python (``EQUIRL_VLLM_PYTHON``
in the image, else this interpreter). Not yet run: no session of this work had a GPU.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.timeout(900)]


def cuda_count() -> int:
    if not os.path.exists("/dev/nvidiactl"):  # no driver: skip without importing torch
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _skip_reason() -> str | None:
    from platform.clinical.vllm_backend import engine_python, vllm_installed

    if cuda_count() == 0:
        return "no CUDA GPU"
    if not vllm_installed(engine_python()):
        return "vllm not importable by the engines' Python (set EQUIRL_VLLM_PYTHON)"
    return None


if (_reason := _skip_reason()) is not None:  # before any fixture (Ray, model build) starts
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from platform.clinical.models import build_tiny_vlm

    return str(build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm")))


def png(color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def request(images, n=4, temperature=1.0, seed=0):
    from platform.clinical.generation import GenerationRequest

    msgs = [[{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": "Findings?"}]}]] * len(images)
    return GenerationRequest(prompts=msgs, images=images, n=n, temperature=temperature,
                             max_new_tokens=16, seed=seed)


def engine_kwargs(path, util):
    return {"model_path": path, "device": "cuda", "dtype": "float32", "max_model_len": 1024,
            "gpu_memory_utilization": util, "seed": 0}


def test_tiny_vlm_generates_with_images_on_vllm_gpu(ray_session, tiny_vlm):
    from platform.clinical import placement
    from platform.clinical.vllm_backend import start_engines

    plc = placement.reserve(placement.PlacementConfig(num_engines=1, num_learners=1,
                                                      colocate=True), name="gpu-vlm")
    try:
        engine = start_engines(plc, engine_kwargs(tiny_vlm, 0.3))["rollout-engine-0"]
        res = ray_session.get(engine.generate.remote(request([png("red"), png("blue")])),
                              timeout=600)
        assert len(res.token_ids) == 2 and all(len(g) == 4 for g in res.token_ids)
        assert all(lp <= 0 for p in res.logprobs for g in p for lp in g)
        assert res.num_generated_tokens > 0
        text_only = ray_session.get(engine.generate.remote(request([None])), timeout=600)
        assert len(res.prompt_token_ids[0]) > len(text_only.prompt_token_ids[0])  # image tokens
        greedy = ray_session.get(engine.generate.remote(
            request([png("red"), png("blue")], n=1, temperature=0.0)), timeout=600)
        assert greedy.token_ids[0] != greedy.token_ids[1], "the image must change the output"
    finally:
        plc.remove()


def test_nccl_broadcast_weight_sync_and_named_timeout(ray_session, tiny_vlm):
    if cuda_count() < 2:
        pytest.skip("NCCL between learner and engine needs 2 GPUs (one rank per device)")
    import ray

    from platform.clinical import placement
    from platform.clinical.vllm_backend import start_engines
    from platform.clinical.weight_sync import (
        BroadcastLearnerMixin,
        WeightSyncTimeout,
        broadcast_weights,
        init_broadcast_group_for,
    )

    class TorchLearner(BroadcastLearnerMixin):
        def __init__(self, path):
            import torch

            from platform.clinical.models import load_model

            self.model = load_model(path).to("cuda")
            self.gen = torch.Generator(device="cuda").manual_seed(0)

        def perturb(self):
            import torch

            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if "lm_head" in name or "embed_tokens" in name:
                        p.add_(torch.randn(p.shape, generator=self.gen, device="cuda") * 0.5)
            return True

        def named_weights(self):
            return list(self.model.named_parameters())

    plc = placement.reserve(placement.PlacementConfig(num_engines=1, num_learners=1), name="gpu-nccl")
    try:
        engines = start_engines(plc, engine_kwargs(tiny_vlm, 0.5))
        learner = ray.remote(TorchLearner).options(**plc.learner_options(0)).remote(tiny_vlm)
        greedy = request([png("red")], n=1, temperature=0.0)
        before = ray.get(engines["rollout-engine-0"].generate.remote(greedy), timeout=600)
        before_sum = ray.get(engines["rollout-engine-0"].weights_checksum.remote())
        assert init_broadcast_group_for(learner, engines, backend="nccl", timeout_s=120) == 2
        ray.get(learner.perturb.remote())
        result = broadcast_weights(learner, engines, version=1, timeout_s=120)
        print(f"NCCL weight sync: {result}")
        assert result.num_tensors > 0 and result.seconds > 0
        assert ray.get(engines["rollout-engine-0"].weights_checksum.remote()) != before_sum
        after = ray.get(engines["rollout-engine-0"].generate.remote(greedy), timeout=600)
        assert after.token_ids != before.token_ids
        # The engine waits for a broadcast the learner never sends: the error names it.
        specs = ray.get(learner.weight_specs.remote())
        with pytest.raises(WeightSyncTimeout, match="rollout-engine-0"):
            from platform.clinical.weight_sync import wait_named

            wait_named({"rollout-engine-0": engines["rollout-engine-0"].receive_weights.remote(
                specs, 2)}, 10, "weight broadcast")
        for e in engines.values():
            ray.kill(e)
    finally:
        plc.remove()


def _train_cli(tmp_path, *sets: str):
    """``python -m platform.train fairgrpo --iterations 2 --set ...`` -> its finished MLflow run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cuda"}
    env.pop("RAY_ADDRESS", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [a for kv in ("rollout.backend=vllm", "rollout.num_workers=1", "learner.num_learners=1",
                         "learner.dist_backend=nccl", *sets) for a in ("--set", kv)]
    out = subprocess.run([sys.executable, "-m", "platform.train", "fairgrpo", "--iterations", "2",
                          "--tracking-uri", uri, *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=850)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "weight_sync/seconds")
    assert [m.step for m in history] == [1, 2]
    return run


def test_colocated_fairgrpo_step_with_deepspeed_learner(tmp_path):
    """Two training steps through the real CLI: vLLM engine + DeepSpeed learner on one GPU
    (weights by object store: NCCL refuses two ranks on one device)."""
    run = _train_cli(tmp_path, "rollout.num_gpus=0.5", "learner.num_gpus=0.5", "placement=colocated")
    assert run.data.params["placement"] == "colocated"


def test_dedicated_fairgrpo_with_nccl_broadcast_through_the_driver(tmp_path):
    """Engine and learner on their own GPUs; weight_sync auto = NCCL broadcast from rank 0."""
    if cuda_count() < 2:
        pytest.skip("dedicated placement with NCCL broadcast needs 2 GPUs")
    run = _train_cli(tmp_path, "rollout.num_gpus=1", "learner.num_gpus=1", "placement=dedicated")
    assert run.data.params["rollout.weight_sync"] == "auto"
    assert run.data.metrics["weight_sync/tensors"] > 0
