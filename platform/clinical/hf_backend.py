"""The Hugging Face rollout backend (``rollout.backend: hf``): ``generate`` on CPU or one GPU.

:class:`HFBackend` samples with ``model.generate`` and returns the *sampling* log-probs (from
the processed scores: after temperature / top-p). :data:`SPEC` is its registry entry
(:mod:`.backends`): build arguments from the config, one GPU share per worker, object-store
weight sync only, the plain :class:`~platform.clinical.generation.WorkerImpl` actor body.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from platform.clinical.backends import BackendSpec, rollout_device
from platform.clinical.generation import (
    GenerationRequest,
    GenerationResult,
    WorkerImpl,
    chat_text,
    decode_image,
)
from typing import Any

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
    def encode(self, messages: list[list[dict]], images: list[Any]) -> dict:
        """Tokenise one sub-batch (all with images or all without) with left padding."""
        texts = [chat_text(self.processor, m, img is not None, self.is_vlm)
                 for m, img in zip(messages, images)]
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

    def named_weights(self) -> list[tuple[str, Any]]:
        """The model's parameters by name, as CPU copies (the names ``load_weights`` takes)."""
        return [(n, p.detach().to("cpu", copy=True)) for n, p in self.model.named_parameters()]


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


def engine_kwargs(cfg: Any, model_path: str, num_options: int) -> dict[str, Any]:
    """:class:`HFBackend` arguments from a ``ClinicalConfig``: model, dtype, device, and the
    answer letters of ``rollout.answer_only`` (default: on for the built-in tiny model and
    models trained from it)."""
    from platform.clinical.models import is_builtin

    r = cfg.rollout
    answer_only = is_builtin(model_path) if r.answer_only is None else r.answer_only
    return {"model_path": model_path, "dtype": cfg.model.dtype, "device": rollout_device(cfg),
            "answer_letters": LETTERS[:num_options] if answer_only else ""}


SPEC = BackendSpec(name="hf", backend=HFBackend, worker=WorkerImpl, engine_kwargs=engine_kwargs)
