"""What crosses the rollout boundary: requests, results, prompt/image helpers, the worker body.

Every rollout backend (:mod:`.hf_backend`, :mod:`.vllm_backend`) and the driver-side pool
(:mod:`.rollout`) import this module; it imports neither of them, so there is no cycle.

* :class:`GenerationRequest` / :class:`GenerationResult`: the only types crossing the boundary.
* :class:`RolloutBackend`: ``generate(req) -> result`` and ``load_weights(named_tensors)``.
* :class:`WorkerImpl`: the plain object behind a rollout Ray actor; builds one backend by its
  registry name (:mod:`.backends`) and forwards calls (testable without Ray).
* :func:`decode_image` / :func:`image_bytes`, :func:`strip_images` / :func:`flatten_text`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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


class WorkerImpl:
    """Plain object behind a rollout Ray actor (testable without Ray): one backend, by name."""

    def __init__(self, backend: str, backend_kwargs: dict[str, Any]):
        from platform.clinical.backends import BACKENDS

        self.backend = BACKENDS.get(backend).backend(**backend_kwargs)
        self.weights_version = -1

    def generate(self, req: GenerationRequest) -> GenerationResult:
        from platform import faults

        faults.check("rollout.generate")  # crash tests (EQUIRL_FAULT); a no-op otherwise
        return self.backend.generate(req)

    def load_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        self.backend.load_weights(named_tensors)
        self.weights_version = version
        return version

    def version(self) -> int:
        return self.weights_version

    def named_weights(self) -> list[tuple[str, Any]]:
        """The weights the worker generates with, by name (CPU copies): to check a sync."""
        read = getattr(self.backend, "named_weights", None)
        if read is None:
            raise NotImplementedError(f"{type(self.backend).__name__} does not expose its weights")
        return read()

    def pid(self) -> int:
        import os

        return os.getpid()


def chat_text(processor: Any, messages: list[dict], with_image: bool, is_vlm: bool) -> str:
    """The prompt string a model sees: the chat template with the generation prompt (image
    items dropped for text-only prompts; content flattened to strings for text-only models)."""
    msgs = messages if with_image else strip_images(messages)
    if not is_vlm:
        msgs = flatten_text(msgs)
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def prompt_token_ids(processor: Any, messages: list[dict], image: bytes | None) -> list[int]:
    """Token ids of one prompt exactly as :class:`~.hf_backend.HFBackend` encodes it (image
    placeholders expanded by the processor): what teacher-forced (SFT) samples start with."""
    is_vlm = hasattr(processor, "image_processor")
    img = decode_image(image) if is_vlm else None
    kwargs: dict[str, Any] = {"text": [chat_text(processor, messages, img is not None, is_vlm)]}
    if img is not None:
        kwargs["images"] = [[img]]
    return [int(t) for t in processor(**kwargs, add_special_tokens=False)["input_ids"][0]]


def image_bytes(img) -> bytes:
    """PIL image -> PNG bytes (helper for callers holding decoded images)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
