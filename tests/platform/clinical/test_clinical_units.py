"""Clinical pipeline pieces without Ray: config errors, data cursor, batches, tiny VLM, HF backend.

(The PPO token loss is tested in tests/algorithms/test_losses.py, the backend registry in
test_backends.py.)"""

from __future__ import annotations

import io
import subprocess
import sys
from platform.clinical.config import ClinicalConfig
from platform.clinical.driver import DataCursor
from platform.clinical.generation import decode_image
from platform.clinical.learner import TrainBatch, shard_batch

import numpy as np
import pytest

from base.config import build, tracked_params
from base.errors import ConfigError, UsageError

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("data, field, words", [
    ({"rollout": {"group_size": 1}}, "rollout.group_size", ">= 2"),
    ({"learner": {"zero_stage": 4}}, "learner.zero_stage", "allowed: 2, 3"),
    ({"learner": {"dist_backend": "mpi"}}, "learner.dist_backend", "allowed"),
    ({"learner": {"kl_coef": -1}}, "learner.kl_coef", ">= 0"),
    ({"learner": {"fairgrad": True, "zero_stage": 3}}, "learner.fairgrad", "zero_stage=2"),
    ({"rollout": {"bogus": 1}}, "rollout.bogus", "allowed: "),
    ({"data": {"prompts_per_step": 0}}, "data.prompts_per_step", ">= 1"),
    ({"algorithm": "ppo"}, "algorithm", "allowed: fairgrpo"),
    ({"rollout": {"vllm": {"gpu_memory_utilization": 1.5}}}, "rollout.vllm.gpu_memory_utilization", "(0, 1]"),
    ({"rollout": {"vllm": {"bogus": 1}}}, "rollout.vllm.bogus", "allowed: cpu_kvcache_gb"),
    ({"rollout": {"vllm": {"dtype": "int4"}}}, "rollout.vllm.dtype", "allowed"),
    ({"rollout": {"vllm": {"cpu_kvcache_gb": 0.5}}}, "rollout.vllm.cpu_kvcache_gb", "expected an integer"),
    ({"rollout": {"vllm": {"cpu_kvcache_gb": 0}}}, "rollout.vllm.cpu_kvcache_gb", ">= 1"),
    ({"rollout": {"weight_sync": "nccl"}}, "rollout.weight_sync", "allowed: 'auto', 'object_store', 'broadcast'"),
    ({"rollout": {"backend": "vllm", "vllm": {"tensor_parallel_size": 2}}},
     "rollout.vllm.tensor_parallel_size", "needs GPUs"),
    ({"learner": {"num_gpus": -1}}, "learner.num_gpus", ">= 0"),
    ({"seed": -1}, "seed", "allowed: 0..2147483647"),  # (it failed after Ray started)
    ({"num_cpus": -2}, "num_cpus", ">= 0"),
    ({"rollout": {"num_cpus": -1}}, "rollout.num_cpus", ">= 0"),
    ({"rollout": {"timeout_s": 0}}, "rollout.timeout_s", "> 0"),
    ({"rollout": {"eval_temperature": -0.5}}, "rollout.eval_temperature", ">= 0"),
    ({"learner": {"timeout_s": -1}}, "learner.timeout_s", "> 0"),
    ({"learner": {"weight_decay": -0.1}}, "learner.weight_decay", ">= 0"),
    ({"data": {"prompts_per_step": 1}, "rollout": {"group_size": 2}, "learner": {"num_learners": 4}},
     "data.prompts_per_step", "num_learners"),
])
def test_config_errors_name_field(data, field, words):
    with pytest.raises(ConfigError) as exc:
        build(ClinicalConfig, data)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_config_defaults_and_estimator_mapping():
    cfg = build(ClinicalConfig, {"algorithm": "grpo-resample"})
    assert (cfg.estimator, cfg.sampler) == ("grpo", "balanced")
    assert build(ClinicalConfig, {"algorithm": "fairgrpo"}).estimator == "fair_grpo"
    assert build(ClinicalConfig, {"algorithm": "grpo-dro"}).estimator == "group_dro"
    params = tracked_params(cfg)
    assert params["learner.zero_stage"] == "2" and params["rollout.group_size"] == "4"
    assert (params["estimator"], params["sampler"]) == ("grpo", "balanced")


# ------------------------------------------------------------------------------------ data cursor

def test_cursor_crosses_epochs_and_restores_exactly():
    a = DataCursor(n=10, seed=3)
    seen = a.next(7) + a.next(7)  # crosses the epoch boundary at 10
    assert sorted(seen[:10]) == list(range(10)) and (a.epoch, a.cursor) == (1, 4)
    b = DataCursor(n=10, seed=3)
    b.load_state_dict(a.state_dict())
    assert a.next(9) == b.next(9)
    # exactly at an epoch boundary
    c = DataCursor(n=10, seed=3)
    c.next(10)
    assert (c.epoch, c.cursor) == (1, 0)
    d = DataCursor(n=10, seed=3)
    d.load_state_dict(c.state_dict())
    assert c.next(5) == d.next(5) == [int(i) for i in DataCursor(n=10, seed=3).order(1)[:5]]
    with pytest.raises(UsageError, match="seed"):
        DataCursor(n=10, seed=4).load_state_dict(c.state_dict())


def test_balanced_cursor_oversamples_minority():
    src = ["a"] * 12
    grp = ["x"] * 10 + ["y"] * 2
    cur = DataCursor(n=12, seed=0, sampler="balanced", data_source=src, group=grp)
    order = cur.order(0)
    assert len(order) == 20 and sum(grp[i] == "y" for i in order) == 10


# ---------------------------------------------------------------------------------- learner batch

def test_shard_batch_equal_micro_counts():
    b = TrainBatch(prompt_ids=[[1]] * 5, completion_ids=[[2]] * 5, advantages=[0.0] * 5, images=[None] * 5)
    shards = shard_batch(b, world=2, accum=3)
    assert [len(r) for r in shards] == [3, 3]
    flat = sorted(i for r in shards for m in r for i in m)
    assert flat == list(range(5))
    assert any(m == [] for r in shards for m in r)  # padded micro-batch (zero weight)


# ---------------------------------------------------------------------------------- tiny model

@pytest.fixture(scope="module")
def tiny_path():
    from platform.clinical import models

    return models.cached_tiny_vlm()


def test_tiny_build_is_deterministic(tmp_path, tiny_path):
    from platform.clinical import models

    from safetensors.torch import load_file

    spec = models.TinyVLMSpec()
    models.build_tiny_vlm(tmp_path / "again", spec)
    a, b = load_file(tiny_path / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    proj = a["multi_modal_projector.mm_input_projection_weight"]
    assert proj.abs().sum() > 0  # re-initialised (Gemma3 zeroes it)
    assert (tiny_path / "chat_template.jinja").exists() or (tiny_path / "tokenizer_config.json").exists()


def test_model_path_errors(tmp_path):
    from platform.clinical import models

    with pytest.raises(UsageError, match="model.path.*not a directory"):
        models.resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="model.path.*config.json"):
        models.resolve_model_path(str(tmp_path))


def _png(seed: int) -> bytes:
    from PIL import Image

    arr = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _messages(text: str, image: bool = True):
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def backend(tiny_path):
    from platform.clinical.backends import BACKENDS

    return BACKENDS.get("hf").backend(model_path=str(tiny_path))


def test_hf_backend_shapes_seed_and_logprobs(backend):
    from platform.clinical.generation import GenerationRequest

    req = GenerationRequest(prompts=[_messages("Which? A) x B) y"), _messages("Text only? A) x B) y", False)],
                            images=[_png(0), None], n=3, temperature=1.0, max_new_tokens=6, seed=5)
    r = backend.generate(req)
    assert len(r.texts) == 2 and all(len(t) == 3 for t in r.texts)
    assert [[len(x) for x in p] for p in r.token_ids] == [[len(x) for x in p] for p in r.logprobs]
    assert r.num_generated_tokens == sum(len(x) for p in r.token_ids for x in p)
    special = set(backend.suppress_ids)
    assert not special & {t for p in r.token_ids for x in p for t in x}
    assert backend.generate(req).token_ids == r.token_ids  # same seed, same samples
    # the image matters (projector re-initialised): prompt ids equal, logits differ
    enc_a = backend.encode([_messages("Which?")], [decode_image(_png(1))])
    enc_b = backend.encode([_messages("Which?")], [decode_image(_png(2))])
    with torch.no_grad():
        la, lb = backend.model(**enc_a).logits, backend.model(**enc_b).logits
    assert not torch.allclose(la[:, -1], lb[:, -1])
    # sampling logprobs == a teacher-forced forward pass (what the learner recomputes)
    ids = r.prompt_token_ids[0] + r.token_ids[0][0]
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
              "token_type_ids": (torch.tensor([ids]) == backend.model.config.image_token_index).long(),
              "pixel_values": backend.processor.image_processor(images=[decode_image(_png(0))], return_tensors="pt")["pixel_values"]}
    with torch.no_grad():
        logits = backend.model(**inputs).logits[0, len(r.prompt_token_ids[0]) - 1: -1]
    logits[:, backend.suppress_ids] = float("-inf")
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r.token_ids[0][0])[:, None]).squeeze(-1)
    np.testing.assert_allclose(lp.numpy(), r.logprobs[0][0], atol=1e-4)


def test_hf_backend_bad_inputs(backend):
    from platform.clinical.generation import GenerationRequest

    with pytest.raises(ValueError, match=r"images\[0\].*decode"):
        backend.generate(GenerationRequest(prompts=[_messages("x")], images=[b"not a png"], n=2,
                                           temperature=1.0, max_new_tokens=2, seed=0))
    with pytest.raises(ValueError, match="one entry per prompt"):
        GenerationRequest(prompts=[_messages("x")], images=[], n=2, temperature=1.0, max_new_tokens=2, seed=0)
    with pytest.raises(KeyError, match="unknown parameter"):
        backend.load_weights([("no.such.weight", torch.zeros(1))])


def test_answer_only_samples_letters(tiny_path):
    from platform.clinical.backends import BACKENDS
    from platform.clinical.generation import GenerationRequest

    b = BACKENDS.get("hf").backend(model_path=str(tiny_path), answer_letters="AB")
    r = b.generate(GenerationRequest(prompts=[_messages("Which? A) x B) y")], images=[_png(0)], n=8,
                                     temperature=1.0, max_new_tokens=5, seed=1))
    assert set(r.texts[0]) <= {"A", "B"} and len(r.texts[0]) == 8
    assert all(len(ids) == 2 and ids[1] in b.stop_ids for ids in r.token_ids[0])
    assert all(lp[0] < 0 and lp[0] >= np.log(1e-6) for lp in r.logprobs[0])


# ------------------------------------------------------------------------------------ CLI input

@pytest.mark.parametrize("argv, words", [
    (["--set", "learner.zero_stage=5"], "learner.zero_stage"),
    (["--model", "/nonexistent/model"], "model.path"),
    (["--data", "/nonexistent/data"], "does not exist"),
    (["--set", "reward.name=nope"], "reward.name"),
    (["--set", "advantage.estimator=nope"], "advantage.estimator"),
])
def test_cli_bad_input_raises_usage_error_before_ray(argv, words, mlflow_uri):
    from platform.clinical.train import main

    with pytest.raises(UsageError, match=words.replace(".", r"\.")):
        main("fairgrpo", argv + ["--tracking-uri", mlflow_uri])


def test_cli_empty_split_and_resume_without_checkpoint(tmp_path, mlflow_uri):
    from platform.clinical.train import main

    from envs.clinical.synth import write_synthetic

    write_synthetic(tmp_path / "d", n_per_source=6, split_fractions=(1.0, 0.0, 0.0))
    with pytest.raises(UsageError, match="split 'val' is empty"):
        main("grpo", ["--data", str(tmp_path / "d"), "--tracking-uri", mlflow_uri])
    with pytest.raises(UsageError, match="--resume: no checkpoint"):
        main("grpo", ["--resume", "--set", f"checkpoint_dir={tmp_path / 'ck'}", "--tracking-uri", mlflow_uri])


def test_checkpoints_default_under_the_storage_root(tmp_path, mlflow_uri, monkeypatch):
    """No checkpoint_dir: checkpoint_root("clinical", experiment, run name), not <repo>/checkpoints."""
    from platform.clinical.train import main

    monkeypatch.setenv("EQUIRL_STORAGE", str(tmp_path / "store"))
    with pytest.raises(UsageError, match="--resume: no checkpoint") as exc:
        main("grpo", ["--resume", "--run-name", "r1", "--experiment", "exp", "--tracking-uri", mlflow_uri])
    assert str(tmp_path / "store" / "checkpoints" / "clinical" / "exp" / "r1") in str(exc.value)


def test_cli_exit_code_2(run_env, repo_root):
    proc = subprocess.run([sys.executable, "-m", "platform.train", "fairgrpo", "--set", "rollout.group_size=1"],
                          cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "rollout.group_size" in proc.stderr and ">= 2" in proc.stderr


def test_fairgrad_surrogate_gradient_is_projected_sum():
    """learner.fairgrad: the surrogate's gradient equals algorithms.fairgrad's projected sum."""
    from platform.clinical.learner import LearnerImpl
    from types import SimpleNamespace

    from algorithms.fairgrad import fairgrad_losses_from_groups, project_conflicting

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x, groups = torch.randn(6, 3), [0, 0, 1, 1, 2, 2]
    learner = object.__new__(LearnerImpl)
    learner.engine, learner.steps, learner.rank = SimpleNamespace(module=net), 4, 0
    learner.device = torch.device("cpu")
    batch = TrainBatch(prompt_ids=[[1]] * 6, completion_ids=[[1]] * 6, advantages=[0.0] * 6,
                       images=[None] * 6, groups=groups)
    per_sample = (net(x).squeeze(-1) - torch.arange(6.0)) ** 2
    surrogate = learner._fairgrad_surrogate(per_sample, batch, list(range(6)))
    got = torch.autograd.grad(surrogate, list(net.parameters()))
    per_sample = (net(x).squeeze(-1) - torch.arange(6.0)) ** 2
    losses = fairgrad_losses_from_groups(per_sample, groups)
    assert len(losses) == 4  # task + one per group
    flat = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, list(net.parameters()), retain_graph=True)])
            for l in losses]
    want = torch.stack(project_conflicting(flat, rng=4 * 7919)).sum(0)
    assert torch.allclose(torch.cat([g.reshape(-1) for g in got]), want, atol=1e-6)


def test_any_local_text_only_model_dir_works(tmp_path):
    """``--model PATH``: a text-only causal LM dir (tokenizer + chat template) loads and samples."""
    from platform.clinical import models
    from platform.clinical.backends import BACKENDS
    from platform.clinical.generation import GenerationRequest

    from transformers import LlamaConfig, LlamaForCausalLM

    tok = models.train_tokenizer(models.TinyVLMSpec())
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                      bos_token_id=tok.bos_token_id))
    lm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    path = models.resolve_model_path(str(tmp_path))
    b = BACKENDS.get("hf").backend(model_path=str(path))
    assert not b.is_vlm
    r = b.generate(GenerationRequest(prompts=[_messages("Which? A) x B) y")], images=[_png(0)], n=2,
                                     temperature=1.0, max_new_tokens=4, seed=0))
    assert len(r.token_ids[0]) == 2 and r.num_generated_tokens > 0
    name, tensor = next(iter(lm.named_parameters()))
    b.load_weights([(name, torch.zeros_like(tensor))])
    assert torch.count_nonzero(dict(b.model.named_parameters())[name]) == 0


# ------------------------------------------------------------------ vLLM / GPU wiring (no vllm here)

def test_vllm_settings_reach_backend_kwargs():
    from platform.clinical.vllm_backend import SPEC

    def vllm_kwargs(cfg):
        return SPEC.engine_kwargs(cfg, "/models/m", 4)

    cfg = build(ClinicalConfig, {"seed": 7, "model": {"dtype": "bfloat16"}, "rollout": {
        "backend": "vllm", "num_gpus": 1,
        "vllm": {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 512,
                 "enforce_eager": False}}})
    kw = vllm_kwargs(cfg)
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"], kw["max_model_len"]) == (2, 0.5, 512)
    assert (kw["enforce_eager"], kw["dtype"], kw["seed"], kw["device"]) == (False, "bfloat16", 7, "cuda")
    assert vllm_kwargs(build(ClinicalConfig, {"rollout": {"vllm": {"dtype": "float16"}}}))["dtype"] == "float16"
    # every key is a VLLMBackend argument
    import inspect
    from platform.clinical.vllm_backend import VLLMBackend

    assert set(kw) <= set(inspect.signature(VLLMBackend.__init__).parameters)
    params = tracked_params(cfg)
    assert params["rollout.vllm.max_model_len"] == "512"
    assert not any(k.startswith("rollout.vllm.") for k in tracked_params(build(ClinicalConfig, {})))


_VLLM_GPU = {"backend": "vllm", "num_gpus": 1, "num_workers": 1}


@pytest.mark.parametrize("data, method", [
    ({}, "object_store"),
    ({"rollout": {"backend": "vllm"}}, "object_store"),
    ({"rollout": {"backend": "vllm", "weight_sync": "broadcast"}}, "broadcast-gloo"),
    ({"rollout": _VLLM_GPU, "learner": {"num_gpus": 1, "num_learners": 1}}, "broadcast-nccl"),
    ({"rollout": {**_VLLM_GPU, "weight_sync": "object_store"}, "learner": {"num_gpus": 1}}, "object_store"),
    ({"placement": "colocated", "rollout": {**_VLLM_GPU, "num_gpus": 0.5},
      "learner": {"num_gpus": 0.5, "num_learners": 1}}, "object_store"),
    ({"rollout": _VLLM_GPU}, "object_store"),  # CPU learners: no NCCL sender
])
def test_weight_sync_method(data, method):
    from platform.clinical.weight_sync import sync_method

    assert sync_method(build(ClinicalConfig, data)) == method


@pytest.mark.parametrize("data, words", [
    ({"rollout": {"weight_sync": "broadcast"}}, "needs rollout.backend=vllm"),
    ({"rollout": {**_VLLM_GPU, "weight_sync": "broadcast"}}, "learner.num_gpus > 0"),
    ({"placement": "colocated", "rollout": {**_VLLM_GPU, "num_gpus": 0.5, "weight_sync": "broadcast"},
      "learner": {"num_gpus": 0.5, "num_learners": 1}}, "two NCCL ranks on one GPU"),
])
def test_weight_sync_method_refuses_impossible_choices(data, words):
    from platform.clinical.weight_sync import sync_method

    with pytest.raises(ConfigError) as exc:
        sync_method(build(ClinicalConfig, data))
    assert exc.value.field == "rollout.weight_sync" and words in str(exc.value)


@pytest.mark.parametrize("data, cluster, ok", [
    ({}, {"CPU": 2.0}, True),
    ({"rollout": {"num_gpus": 0.5}, "learner": {"num_gpus": 1}}, {"GPU": 3.0}, True),
    ({"rollout": {"num_gpus": 0.5}, "learner": {"num_gpus": 1}}, {"GPU": 2.0}, False),
    ({"rollout": {"backend": "vllm", "num_gpus": 1, "num_workers": 1, "vllm": {"tensor_parallel_size": 4}}},
     {"GPU": 3.0}, False),
])
def test_gpu_capacity_check(data, cluster, ok):
    from platform.clinical.placement import check_gpu_capacity

    cfg = build(ClinicalConfig, data)
    if ok:
        check_gpu_capacity(cfg, cluster)
    else:
        with pytest.raises(UsageError, match=r"rollout\.num_gpus / learner\.num_gpus: asked for \d+ GPUs"):
            check_gpu_capacity(cfg, cluster)


def _no_running_runs(uri: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps]) if exps else []
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []


def test_cli_vllm_not_installed_exit_2(run_env, repo_root, mlflow_uri):
    env = run_env()
    env.pop("EQUIRL_VLLM_PYTHON", None)
    proc = subprocess.run([sys.executable, "-m", "platform.train", "fairgrpo", "--set", "rollout.backend=vllm",
                           "--iterations", "1", "--tracking-uri", mlflow_uri],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "vllm is not installed" in proc.stderr and "make install-vllm" in proc.stderr
    assert "Traceback" not in proc.stderr
    _no_running_runs(mlflow_uri)


@pytest.mark.timeout(300)
def test_cli_more_gpus_than_cluster_exit_2_before_actors(run_env, repo_root, mlflow_uri, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "platform.train", "fairgrpo", "--set", "rollout.num_gpus=1",
                           "--set", "num_cpus=1", "--iterations", "1", "--tracking-uri", mlflow_uri,
                           "--set", f"checkpoint_dir={tmp_path / 'ck'}"],
                          cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "asked for 2 GPUs" in proc.stderr and "the cluster has 0" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    _no_running_runs(mlflow_uri)
    assert not any((tmp_path / "ck").glob("step-*"))


def test_vllm_preflight_refuses_cpu_head_size(tmp_path, monkeypatch):
    """With vllm importable, a model whose head size vLLM's CPU backend lacks is refused on CPU
    (and accepted when the engines get GPUs)."""
    import json
    from platform.clinical import vllm_backend
    from platform.clinical.backends import preflight as preflight_backend

    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 96, "num_attention_heads": 2}))
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda python=None: True)
    cpu = build(ClinicalConfig, {"rollout": {"backend": "vllm"}})
    with pytest.raises(UsageError, match="head size 48.*not support"):
        preflight_backend(cpu, str(tmp_path))
    preflight_backend(build(ClinicalConfig, {"rollout": {"backend": "vllm", "num_gpus": 1}}), str(tmp_path))
    with pytest.raises(UsageError, match="rollout.backend: 'sglang'; allowed: hf, vllm"):
        preflight_backend(build(ClinicalConfig, {"rollout": {"backend": "sglang"}}), str(tmp_path))


def test_engine_runtime_env_runs_engines_under_the_vllm_python(monkeypatch):
    """EQUIRL_VLLM_PYTHON -> py_executable, with the repo importable and per-actor env kept."""
    import sys
    from platform.clinical.vllm_backend import engine_runtime_env
    from platform.cluster import REPO_ROOT

    monkeypatch.delenv("EQUIRL_VLLM_PYTHON", raising=False)
    assert engine_runtime_env(None) is None
    assert engine_runtime_env({"env_vars": {"A": "1"}}) == {"env_vars": {"A": "1"}}
    monkeypatch.setenv("EQUIRL_VLLM_PYTHON", sys.executable)  # same interpreter: nothing to switch
    assert engine_runtime_env(None) is None
    monkeypatch.setenv("EQUIRL_VLLM_PYTHON", "/opt/vllm/bin/python")
    env = engine_runtime_env({"env_vars": {"A": "1"}})
    assert env["py_executable"] == "/opt/vllm/bin/python" and env["env_vars"]["A"] == "1"
    assert str(REPO_ROOT) in env["env_vars"]["PYTHONPATH"].split(":")
    assert engine_runtime_env(None, "/other/python")["py_executable"] == "/other/python"


def test_small_groups_rates_are_withheld_in_tables_and_summary():
    """Privacy: a group under ``report_min_group_size`` keeps its size, loses its rates."""
    from platform.clinical import artifacts

    metrics = {"eval/by_group/F|<=25/accuracy": 1.0, "eval/by_group/M|26-50/accuracy": 0.625,
               "fairness/by_group/sex&age_band=F|<=25/n": 3.0,
               "fairness/by_group/sex&age_band=F|<=25/f1": 1.0,
               "fairness/by_group/sex&age_band=M|26-50/n": 40.0,
               "fairness/by_group/sex&age_band=M|26-50/f1": 0.5}
    table = artifacts.group_table(metrics, step=7, min_size=10).set_index("group")
    assert table.loc["F|<=25", "withheld"] and not table.loc["M|26-50", "withheld"]
    assert table.loc["F|<=25", "n"] == 3 and table.loc["F|<=25", ["accuracy", "f1"]].isna().all()
    assert table.loc["M|26-50", "accuracy"] == 0.625 and table.loc["M|26-50", "f1"] == 0.5
    text = artifacts.summary_markdown("t", metrics, table.reset_index(), min_size=10)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| F\\|<=25"] == "| F\\|<=25 | 3 | withheld | withheld |", rows
    assert "0.625" in rows["| M\\|26-50"] and "under 10 patients" in text
    # min_size 1 (the authors' evaluation, every group reported) withholds nothing
    assert not artifacts.group_table(metrics, step=7)["withheld"].any()
