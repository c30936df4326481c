"""Rollout: sample G completions per prompt. One backend interface, thin Ray actor shells.

* :class:`GenerationRequest` / :class:`GenerationResult`: the only types crossing the boundary.
* :class:`RolloutBackend`: ``generate(req) -> result`` and ``load_weights(named_tensors)``.
  Backends register by name in :data:`ROLLOUT_BACKENDS`: ``"hf"`` (:class:`HFBackend`, HF
  ``generate``) here and ``"vllm"`` lazily (``platform.clinical.vllm_backend:VLLMBackend``).
* :class:`RolloutWorker`: a Ray actor that builds one backend by name and forwards calls.
* :class:`RolloutPool`: driver-side: shards prompts over workers, retries a shard on a
  restarted worker (``max_restarts``) after re-sending the latest weights, merges results.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from base.registry import Registry


@dataclass
class GenerationRequest:
    """A batch of prompts; every prompt gets ``n`` sampled completions."""

    prompts: list[list[dict]]
    """Chat messages per prompt (``{"role", "content"}``; content a string or a list of
    ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items)."""
    images: list[bytes | None]
    """Encoded image (PNG/JPEG bytes) per prompt, or None for text-only prompts."""
    n: int
    """G: completions sampled per prompt."""
    temperature: float
    """Sampling temperature; 0 means greedy."""
    max_new_tokens: int
    seed: int
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if len(self.images) != len(self.prompts):
            raise ValueError(f"images ({len(self.images)}) must have one entry per prompt ({len(self.prompts)})")
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n ({self.n}) and max_new_tokens ({self.max_new_tokens}) must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0 and top_p ({self.top_p}) in (0, 1]")

    def shard(self, parts: int) -> list[tuple[slice, GenerationRequest]]:
        """Split into <= ``parts`` contiguous prompt slices, each with a derived seed."""
        size = -(-len(self.prompts) // max(1, parts))
        out = []
        for k, start in enumerate(range(0, len(self.prompts), size or 1)):
            sl = slice(start, start + size)
            out.append((sl, GenerationRequest(
                prompts=self.prompts[sl], images=self.images[sl], n=self.n,
                temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                seed=self.seed * 1009 + k, top_p=self.top_p)))
        return out


@dataclass
class GenerationResult:
    """Completions indexed ``[prompt][g]``; token lists exclude padding, include the stop token."""

    texts: list[list[str]]
    token_ids: list[list[list[int]]]
    logprobs: list[list[list[float]]]
    """Sampling log-probabilities of each generated token (same shape as ``token_ids``)."""
    prompt_token_ids: list[list[int]]
    num_generated_tokens: int
    seconds: float

    @staticmethod
    def concat(parts: list[GenerationResult]) -> GenerationResult:
        return GenerationResult(
            texts=[t for p in parts for t in p.texts],
            token_ids=[t for p in parts for t in p.token_ids],
            logprobs=[t for p in parts for t in p.logprobs],
            prompt_token_ids=[t for p in parts for t in p.prompt_token_ids],
            num_generated_tokens=sum(p.num_generated_tokens for p in parts),
            seconds=max((p.seconds for p in parts), default=0.0),
        )


@runtime_checkable
class RolloutBackend(Protocol):
    def generate(self, req: GenerationRequest) -> GenerationResult: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None: ...


ROLLOUT_BACKENDS: Registry = Registry("rollout backend")
ROLLOUT_BACKENDS.register("vllm", "platform.clinical.vllm_backend:VLLMBackend",
                          help="vLLM engine (GPU image, or the separate CPU venv)")


def decode_image(data: bytes | None, index: int = 0):
    """PNG/JPEG bytes -> RGB PIL image (ValueError naming the prompt index if corrupt)."""
    if data is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"images[{index}]: cannot decode image bytes: {exc}") from None
    return img.convert("RGB")


def strip_images(messages: list[dict]) -> list[dict]:
    """Drop image items from chat content (text-only prompts / text-only models)."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [c for c in content if c.get("type") != "image"]
        out.append({**m, "content": content})
    return out


def flatten_text(messages: list[dict]) -> list[dict]:
    """Content lists -> plain strings (for tokenizers whose template expects strings)."""
    return [{**m, "content": m["content"] if isinstance(m["content"], str)
             else "".join(c.get("text", "") for c in m["content"])} for m in messages]


@ROLLOUT_BACKENDS.register("hf")
class HFBackend:
    """Hugging Face ``generate`` on CPU or one GPU: sampling logprobs from the processed scores."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32",
                 torch_threads: int | None = 1, answer_letters: str = ""):
        """``answer_letters`` (e.g. ``"ABC"``): constrained decoding for tiny-model runs — the
        first token must be one of these letters, the second a stop token, so a random tiny
        model answers in a parseable form from step one. Empty (default) = free text."""
        from platform.clinical import models

        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = device
        self.model, self.processor = models.load_policy(model_path, dtype)
        self.model.to(device).eval()
        self.tokenizer = models.tokenizer_of(self.processor)
        self.is_vlm = hasattr(self.processor, "image_processor")
        self.stop_ids = models.stop_token_ids(self.tokenizer)
        self.suppress_ids = models.suppressed_token_ids(self.tokenizer)
        self.answer_ids = models.letter_token_ids(self.tokenizer, answer_letters) if answer_letters else []

    # -- encoding ---------------------------------------------------------------------------
    def _chat_text(self, messages: list[dict], with_image: bool) -> str:
        msgs = messages if with_image else strip_images(messages)
        if not self.is_vlm:
            msgs = flatten_text(msgs)
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def encode(self, messages: list[list[dict]], images: list[Any]) -> dict:
        """Tokenise one sub-batch (all with images or all without) with left padding."""
        texts = [self._chat_text(m, img is not None) for m, img in zip(messages, images)]
        kwargs: dict[str, Any] = dict(text=texts, return_tensors="pt", padding=True)
        if self.is_vlm and images and images[0] is not None:
            kwargs["images"] = [[img] for img in images]
        enc = self.processor(**kwargs, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- sampling ---------------------------------------------------------------------------
    def generate(self, req: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        images = [decode_image(b, i) for i, b in enumerate(req.images)]
        if not self.is_vlm:
            images = [None] * len(images)
        n_prompts = len(req.prompts)
        texts: list[list[str]] = [[] for _ in range(n_prompts)]
        tokens: list[list[list[int]]] = [[] for _ in range(n_prompts)]
        logps: list[list[list[float]]] = [[] for _ in range(n_prompts)]
        prompt_ids: list[list[int]] = [[] for _ in range(n_prompts)]
        with_img = [i for i, im in enumerate(images) if im is not None]
        without = [i for i, im in enumerate(images) if im is None]
        total = 0
        for part, idx in enumerate((with_img, without)):
            if not idx:
                continue
            enc = self.encode([req.prompts[i] for i in idx], [images[i] for i in idx])
            seqs, lps = self._sample(enc, req, seed=req.seed * 7 + part)
            mask = enc["attention_mask"]
            for j, i in enumerate(idx):
                prompt_ids[i] = enc["input_ids"][j][mask[j].bool()].tolist()
                for g in range(req.n):
                    ids, lp = self._trim(seqs[j * req.n + g], lps[j * req.n + g])
                    tokens[i].append(ids)
                    logps[i].append(lp)
                    texts[i].append(self.tokenizer.decode(ids, skip_special_tokens=True))
                    total += len(ids)
        return GenerationResult(texts=texts, token_ids=tokens, logprobs=logps,
                                prompt_token_ids=prompt_ids, num_generated_tokens=total,
                                seconds=time.perf_counter() - start)

    def _sample(self, enc: dict, req: GenerationRequest, seed: int):
        """Returns generated ids ``(B*n, T)`` and their sampling logprobs ``(B*n, T)``."""
        import torch

        greedy = req.temperature == 0
        extra: dict[str, Any] = {}
        if self.answer_ids:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([_AnswerOnly(
                enc["input_ids"].shape[1], self.answer_ids, self.stop_ids)])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            out = self.model.generate(
                **enc, do_sample=not greedy, temperature=None if greedy else req.temperature,
                top_p=None if greedy else req.top_p, top_k=None, max_new_tokens=req.max_new_tokens,
                num_return_sequences=req.n, output_scores=True, return_dict_in_generate=True,
                suppress_tokens=self.suppress_ids or None, eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id, **extra,
            )
        gen = out.sequences[:, enc["input_ids"].shape[1]:]
        scores = torch.stack(out.scores, dim=1).float()  # (B*n, T, V) after temperature/top-p
        lp = torch.log_softmax(scores, dim=-1).gather(-1, gen.unsqueeze(-1)).squeeze(-1)
        return gen.cpu(), lp.cpu()

    def _trim(self, ids, lps) -> tuple[list[int], list[float]]:
        """Cut a sampled row after its first stop token (inclusive)."""
        ids_l = ids.tolist()
        end = len(ids_l)
        for t, tok in enumerate(ids_l):
            if tok in self.stop_ids:
                end = t + 1
                break
        return ids_l[:end], [float(x) for x in lps[:end].tolist()]

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Copy full tensors into the model by parameter name (unknown names raise)."""
        import torch

        params = dict(self.model.named_parameters())
        params.update({k: v for k, v in self.model.named_buffers() if k not in params})
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in params:
                    raise KeyError(f"load_weights: unknown parameter {name!r}")
                params[name].copy_(torch.as_tensor(tensor).to(params[name].dtype))


class _AnswerOnly:
    """Logits processor: position 0 allows only ``letters``, later positions only ``stops``."""

    def __init__(self, prompt_len: int, letters: list[int], stops: list[int]):
        self.prompt_len, self.letters, self.stops = prompt_len, letters, stops

    def __call__(self, input_ids, scores):
        import torch

        allowed = self.letters if input_ids.shape[1] == self.prompt_len else self.stops
        mask = torch.full_like(scores, float("-inf"))
        mask[:, allowed] = 0.0
        return scores + mask


class _WorkerImpl:
    """Plain object behind the Ray actor (testable without Ray)."""

    def __init__(self, backend: str, backend_kwargs: dict[str, Any]):
        self.backend = ROLLOUT_BACKENDS.get(backend)(**backend_kwargs)
        self.weights_version = -1

    def generate(self, req: GenerationRequest) -> GenerationResult:
        return self.backend.generate(req)

    def load_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        self.backend.load_weights(named_tensors)
        self.weights_version = version
        return version

    def version(self) -> int:
        return self.weights_version

    def pid(self) -> int:
        import os

        return os.getpid()


def make_worker_class(backend: str = "hf"):
    """The Ray actor class (created lazily so importing this module needs no Ray or vLLM)."""
    import ray

    if backend == "vllm":
        from platform.clinical.vllm_backend import EngineWorkerImpl

        return ray.remote(EngineWorkerImpl)
    return ray.remote(_WorkerImpl)


@dataclass
class RolloutPool:
    """Driver-side handle over ``num_workers`` rollout actors.

    ``generate(req)`` shards the prompts, and if a worker dies mid-call waits for Ray to
    restart it (up to ``max_restarts``), re-sends the latest weights and retries that shard,
    so no prompt of the step is lost.
    """

    backend: str
    backend_kwargs: dict[str, Any]
    num_workers: int = 2
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    max_restarts: int = 2
    timeout_s: float = 600.0
    actor_options: list[dict[str, Any]] | None = None
    "Per-worker Ray options (``placement.Placement.engine_options(i)``); None = num_cpus/num_gpus."
    workers: list[Any] = field(default_factory=list, init=False)
    restarts: int = field(default=0, init=False)
    weights_source: Callable[[], list[tuple[str, Any]]] | None = None
    "Current full weights for a restarted worker when weights travel by broadcast (no object-store copy)."
    _weights_ref: Any = field(default=None, init=False)
    _version: int = field(default=-1, init=False)
    _group_backend: str | None = field(default=None, init=False)
    _group_restarts: int = field(default=0, init=False)

    def start(self, wait: bool = True) -> RolloutPool:
        """Create the actors; ``wait=False`` returns at once (call :meth:`wait_ready`).

        ``backend="vllm"``: the actors are :class:`~platform.clinical.vllm_backend.EngineWorkerImpl`
        (rollout worker + broadcast weight sync) and run under ``EQUIRL_VLLM_PYTHON`` when it
        is set (Ray's ``py_executable``: vLLM in its own environment, same Ray and torch).
        """
        cls = make_worker_class(self.backend)
        self.workers = [
            cls.options(**self._resources(k), max_restarts=self.max_restarts, max_task_retries=0,
                        name=None).remote(self.backend, self.backend_kwargs)
            for k in range(self.num_workers)
        ]
        if wait:
            self.wait_ready()
        return self

    def _resources(self, k: int) -> dict[str, Any]:
        """Ray options placing worker ``k``: its placement-group bundle, or plain resources,
        plus the engines' interpreter for vLLM."""
        if self.actor_options is None:
            opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        else:
            opts = {key: v for key, v in self.actor_options[k].items() if v is not None}
        if self.backend == "vllm":
            from platform.clinical.vllm_backend import engine_runtime_env

            env = engine_runtime_env(opts.get("runtime_env"))
            if env:
                opts["runtime_env"] = env
        return opts

    def wait_ready(self) -> None:
        import ray

        ray.get([w.version.remote() for w in self.workers], timeout=self.timeout_s)

    def named(self) -> dict[str, Any]:
        """``{"rollout-worker-k": actor}``: the names timeouts and errors use."""
        return {f"rollout-worker-{k}": w for k, w in enumerate(self.workers)}

    def load_weights(self, named_tensors: list[tuple[str, Any]], version: int):
        """Object-store sync: one ``ray.put``, every worker loads it (vLLM: ``reload_weights``).

        Returns the :class:`~platform.clinical.weight_sync.SyncResult`; a worker that does not
        finish within ``timeout_s`` is named in the WeightSyncTimeout."""
        from platform.clinical.weight_sync import sync_via_object_store

        result, self._weights_ref = sync_via_object_store(self.named(), named_tensors, version,
                                                          self.timeout_s)
        self._version = version
        return result

    # -- broadcast weight sync (vLLM engines; NCCL on GPUs, gloo on CPU) --------------------
    def init_broadcast(self, learners: Any, backend: str) -> int:
        """Form the group {learner rank 0} + every engine worker (again after a restart)."""
        from platform.clinical.weight_sync import init_broadcast_group_for

        tp = int(self.backend_kwargs.get("tensor_parallel_size", 1))
        world = init_broadcast_group_for(learners.actors[0], self.named(), tp, backend,
                                         self.timeout_s)
        self._group_backend = backend
        return world

    def broadcast_weights(self, learners: Any, version: int, backend: str):
        """Learner rank 0 broadcasts its weights into every engine (other learner ranks join a
        ZeRO-3 gather). A restarted engine is not in the old group, so the group is formed
        anew first. Returns the SyncResult; a stuck learner or engine is named on timeout."""
        from platform.clinical.weight_sync import broadcast_weights

        if self._group_backend != backend or self._group_restarts != self.restarts:
            self.init_broadcast(learners, backend)
            self._group_restarts = self.restarts
        result = broadcast_weights(learners.actors[0], self.named(), version, self.timeout_s,
                                   backend, peers=learners.actors[1:])
        self._version, self._weights_ref = version, None
        return result

    def generate(self, req: GenerationRequest) -> GenerationResult:
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        shards = req.shard(len(self.workers))
        pending = {k: self.workers[k].generate.remote(sub) for k, (_, sub) in enumerate(shards)}
        results: dict[int, GenerationResult] = {}
        attempts = 0
        while pending:
            k, ref = next(iter(pending.items()))
            try:
                results[k] = ray.get(ref, timeout=self.timeout_s)
                del pending[k]
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                attempts += 1
                if attempts > self.max_restarts * len(self.workers):
                    raise
                self.restarts += 1
                self._resync(k)
                pending[k] = self.workers[k].generate.remote(shards[k][1])
        return GenerationResult.concat([results[k] for k in range(len(shards))])

    def _resync(self, k: int) -> None:
        """Wait for worker ``k``'s restart, then give it the latest weights."""
        import ray
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + self.timeout_s
        if self._weights_ref is None and self._version >= 0 and self.weights_source is not None:
            self._weights_ref = ray.put(self.weights_source())  # broadcast mode: fetch them now
        while True:
            try:
                if self._weights_ref is not None:
                    ray.get(self.workers[k].load_weights.remote(self._weights_ref, self._version),
                            timeout=self.timeout_s)
                else:
                    ray.get(self.workers[k].version.remote(), timeout=self.timeout_s)
                return
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers], timeout=self.timeout_s)

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
