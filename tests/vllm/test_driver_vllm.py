"""The clinical driver end to end with ``rollout.backend: vllm`` (CPU build), as a user runs it.

The driver, its DeepSpeed learners and MLflow run in the main environment; the vLLM engine
actors run in .venv-vllm (``EQUIRL_VLLM_PYTHON``, Ray's ``py_executable``), the layout of the
GPU image (vLLM in its own venv). Both weight-sync transports are checked by comparing the
engines' parameters with the learners' after an update: the object store (``reload_weights``)
and the learner-rank-0 broadcast (gloo here; NCCL on GPUs, same code). A killed engine comes
back with the learners' current weights and rejoins a re-formed broadcast group.

Collected in the main environment only (the vLLM environment has no DeepSpeed / MLflow);
skips with the reason when .venv-vllm is missing (``make install-vllm``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
pytest.importorskip("deepspeed", reason="driver tests run in the main environment")
if not (REPO / ".venv-vllm" / ".installed").exists():
    pytest.skip("no .venv-vllm: run `make install-vllm` to run the driver with vLLM engines",
                allow_module_level=True)

ENGINE = {"rollout.vllm.max_model_len": 512, "rollout.vllm.dtype": "float32",
          "rollout.vllm.max_num_seqs": 32, "rollout.vllm.cpu_kvcache_gb": 1}


@pytest.fixture(scope="module")
def tiny_llama_main(tmp_path_factory):
    from tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-driver"))


@pytest.fixture
def engine_python(monkeypatch):
    monkeypatch.setenv("EQUIRL_VLLM_PYTHON", str(VLLM_PYTHON))


def make_config(model: Path, weight_sync: str, tmp: Path):
    from platform.clinical.config import (
        ClinicalConfig,
        DataConfig,
        LearnerConfig,
        ModelConfig,
        RolloutConfig,
        VLLMConfig,
    )

    return ClinicalConfig(
        algorithm="fairgrpo", iterations=2, checkpoint_dir=str(tmp / "ckpt"),
        model=ModelConfig(path=str(model)), data=DataConfig(prompts_per_step=4, eval_prompts=8),
        rollout=RolloutConfig(backend="vllm", num_workers=2, num_cpus=0.1, max_restarts=2,
                              timeout_s=300, weight_sync=weight_sync, max_new_tokens=8,
                              vllm=VLLMConfig(max_model_len=512, dtype="float32", max_num_seqs=32,
                                              cpu_kvcache_gb=1)),
        learner=LearnerConfig(num_learners=2, zero_stage=3, lr=0.05, num_cpus=0.1, timeout_s=300))


def engine_sums(pipe) -> list[dict[str, float]]:
    """Per engine: ``{name: sum}`` of the parameters vLLM's CPU build keeps unpacked
    (embeddings, norms, lm_head; its linear layers live in a packed GEMM layout)."""
    import ray

    return ray.get([w.weight_sums.remote() for w in pipe.pool.workers], timeout=300)


def assert_engines_hold(pipe, weights) -> None:
    """Every engine's exposed parameters equal the learners' (float64 sums, by name), and
    greedy decoding matches transformers with the learners' full weights (which also
    covers the packed linear layers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from platform.clinical.models import suppressed_token_ids
    from platform.clinical.generation import GenerationRequest

    learner = {n: float(t.double().sum()) for n, t in weights}
    for sums in engine_sums(pipe):
        assert {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= set(sums)
        assert sums == pytest.approx({n: learner[n] for n in sums}, rel=1e-6, abs=1e-6)

    prompt = [[{"role": "user", "content": "The chest radiograph shows"}]] * len(pipe.pool.workers)
    out = pipe.pool.generate(GenerationRequest(prompts=prompt, images=[None] * len(prompt), n=1,
                                               temperature=0.0, max_new_tokens=6, seed=0))
    model = AutoModelForCausalLM.from_pretrained(pipe.model_path, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    assert not unexpected and not [k for k in missing if "rotary" not in k]
    ids = torch.tensor([out.prompt_token_ids[0]])
    tok = AutoTokenizer.from_pretrained(pipe.model_path)
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=6, pad_token_id=tok.pad_token_id,
                             suppress_tokens=suppressed_token_ids(tok) or None)[0, ids.shape[1]:]
    for got in out.token_ids:  # one completion per engine (the request is sharded)
        assert got[0] == ref.tolist()[:len(got[0])]


def learner_sum(weights) -> float:
    return float(sum(t.double().sum().item() for _, t in weights))


def update_once(pipe, number: int) -> None:
    """One real rollout + a learner update with +-1 advantages (the weights must move)."""
    import numpy as np

    from algorithms.advantages import AdvantageResult

    step = pipe.rollout(number)
    n = sum(len(t) for t in step.result.texts)
    step.advantages = AdvantageResult(np.where(np.arange(n) % 2 == 0, 1.0, -1.0))
    pipe.update(step)


def test_driver_syncs_learner_weights_into_vllm_engines(ray_session, engine_python,
                                                        tiny_llama_main, tmp_path):
    """One pipeline (2 engines, 2 ZeRO-3 learners), both transports in turn, then a restart."""
    import ray

    from platform.clinical.driver import Pipeline

    pipe = Pipeline(make_config(tiny_llama_main, "broadcast", tmp_path))
    assert pipe.sync_method == "broadcast-gloo"
    try:
        pipe.start()
        initial = pipe.learners.full_weights()
        assert_engines_hold(pipe, initial)
        previous = learner_sum(initial)
        for step, method in enumerate(["object_store", "broadcast-gloo"], start=1):
            pipe.sync_method = method
            update_once(pipe, step)
            weights = pipe.learners.full_weights()
            assert learner_sum(weights) != pytest.approx(previous, rel=1e-6)  # the update moved them
            previous = learner_sum(weights)
            metrics = pipe.sync(step)
            assert metrics["weight_sync/tensors"] == len(weights)
            assert metrics["weight_sync/seconds"] > 0
            assert_engines_hold(pipe, weights)

        # Kill engine 0: the next rollout waits for the restart, which reloads the learners'
        # current weights (no object-store copy exists in broadcast mode); the next broadcast
        # re-forms the group with the restarted engine.
        ray.kill(pipe.pool.workers[0], no_restart=False)
        pipe.rollout(3)
        assert pipe.pool.restarts >= 1
        assert_engines_hold(pipe, weights)
        update_once(pipe, 4)
        weights = pipe.learners.full_weights()
        pipe.sync(4)
        assert_engines_hold(pipe, weights)
    finally:
        pipe.stop()


def test_train_cli_with_vllm_engines_and_broadcast_sync(tiny_llama_main, tmp_path, mlflow_uri,
                                                        run_env):
    """``python -m platform.train fairgrpo --set rollout.backend=vllm ...`` as a user types it."""
    sets = {"rollout.backend": "vllm", "rollout.weight_sync": "broadcast", "rollout.num_workers": 1,
            "learner.num_learners": 2, "data.eval_prompts": 8, "data.prompts_per_step": 4,
            "rollout.max_new_tokens": 8, "checkpoint_dir": str(tmp_path / "ckpt"), **ENGINE}
    cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "platform.train", "fairgrpo",
           "--model", str(tiny_llama_main), "--iterations", "2", "--tracking-uri", mlflow_uri,
           "--experiment", "vllm-driver"]
    cmd += [a for k, v in {**sets, "num_cpus": 2}.items() for a in ("--set", f"{k}={v}")]
    env = run_env(EQUIRL_VLLM_PYTHON=str(VLLM_PYTHON),
                         EQUIRL_STORAGE=str(tmp_path / "storage"))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("vllm-driver")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["rollout.backend"] == "vllm"
    assert run.data.params["rollout.weight_sync"] == "broadcast"
    history = client.get_metric_history(run.info.run_id, "weight_sync/seconds")
    assert [m.step for m in history] == [1, 2] and all(m.value > 0 for m in history)
    assert client.get_metric_history(run.info.run_id, "time/sync")
    assert "eval/accuracy" in run.data.metrics
