"""The GPU kit's models, inputs and formulas (no timing here; :mod:`benchmarks.gpu_kit_sections` times).

* :data:`MEDGEMMA_4B`: a Gemma3 VLM with MedGemma-4B's published architecture; :data:`TINY`: the
  same structure at toy size (``--dry-run``). :func:`write_model_dir` writes a model folder with
  its ``config.json`` and a processor (the project's tokenizer, a Gemma3 image processor) and no
  weights; :func:`random_weights` makes the project's loader (``platform.clinical.models.
  load_model``) build random weights *on the device* for that folder, so the project's own
  ``HFBackend`` and ``LearnerImpl`` constructors run unchanged and nothing is downloaded.
* :func:`decode_weight_bytes`, :func:`kv_bytes`, :func:`mean_decode_bytes` and
  :func:`bandwidth_bound`: the HBM-bandwidth bound on decode,
  ``tokens/s <= batch x bandwidth / bytes read per decode step`` (weights + KV cache).
* :func:`chat_request` / :func:`train_batch`: the rollout request and learner batch the kit times.

MedGemma-4B's numbers, and where they come from:

* Text decoder (Gemma 3 4B): hidden 2560, MLP 10240 (= 2560 x 8 / 2), 34 layers, 8 query heads,
  4 KV heads, head_dim 256, query_pre_attn_scalar 256, sliding window 1024 on 5 of every 6
  layers, RoPE theta 1e6 with linear scaling x8 on the global layers, 1e4 on the local ones.
  Source: transformers ``src/transformers/models/gemma3/convert_gemma3_weights.py``,
  ``_VARIANTS[_VARIANT_GEMMA_3_4B]`` (github.com/huggingface/transformers).
* Vision tower (SigLIP): hidden 1152, MLP 4304, 27 layers, 16 heads, 896 x 896 images, patch 14,
  no pooling head. Source: the same file, ``_VISION_CONFIG``.
* Vocabulary 262,208 (262,144 SentencePiece pieces + 64 added, the image soft token among them),
  256 tokens per image, BF16, 4.3B parameters: the MedGemma-4B model card
  (huggingface.co/google/medgemma-4b-it: "4.3B", "BF16", "images normalized to 896 x 896 and
  encoded to 256 tokens") and Gemma 3 4B's published config (``vocab_size`` 262208,
  ``mm_tokens_per_image`` 256). Built from these numbers the model below has 4,300,079,472
  parameters (3,880,263,168 in the text decoder with tied embeddings, 416,866,032 in the vision
  tower, 2,950,272 in the projector), matching the card's 4.3B.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """Architecture numbers of a Gemma3 VLM (the fields that set its size and its KV cache)."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    sliding_window: int
    global_every: int
    """Every ``global_every``-th layer attends to the full context; the others to the window."""
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int
    mm_tokens_per_image: int

    @property
    def layer_types(self) -> list[str]:
        return ["full_attention" if (i + 1) % self.global_every == 0 else "sliding_attention"
                for i in range(self.num_layers)]


MEDGEMMA_4B = ModelSpec(
    name="MedGemma-4B architecture (Gemma3ForConditionalGeneration, random weights)",
    vocab_size=262_208, hidden_size=2560, intermediate_size=10_240, num_layers=34, num_heads=8,
    num_kv_heads=4, head_dim=256, sliding_window=1024, global_every=6,
    vision_hidden_size=1152, vision_intermediate_size=4304, vision_layers=27, vision_heads=16,
    image_size=896, patch_size=14, mm_tokens_per_image=256,
)

TINY = ModelSpec(
    name="tiny Gemma3 (dry run: MedGemma-4B's structure at toy size)",
    vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
    num_kv_heads=1, head_dim=32, sliding_window=16, global_every=2,
    vision_hidden_size=32, vision_intermediate_size=64, vision_layers=1, vision_heads=2,
    image_size=32, patch_size=8, mm_tokens_per_image=4,
)


# ------------------------------------------------------------------------------ model folder

def hf_config(spec: ModelSpec, token_ids: dict[str, int]) -> Any:
    """``Gemma3Config`` for ``spec``; special-token ids from the tokenizer that travels with it."""
    from transformers import Gemma3Config

    global_rope = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}
    return Gemma3Config(
        text_config={
            "vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size, "num_hidden_layers": spec.num_layers,
            "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim, "query_pre_attn_scalar": spec.head_dim,
            "sliding_window": spec.sliding_window, "layer_types": spec.layer_types,
            "max_position_embeddings": 8192,
            "rope_parameters": {"full_attention": global_rope,
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
            "pad_token_id": token_ids["<pad>"], "bos_token_id": token_ids["<bos>"],
            "eos_token_id": token_ids["<eos>"],
        },
        vision_config={
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_hidden_layers": spec.vision_layers, "num_attention_heads": spec.vision_heads,
            "image_size": spec.image_size, "patch_size": spec.patch_size, "vision_use_head": False,
        },
        mm_tokens_per_image=spec.mm_tokens_per_image,
        boi_token_index=token_ids["<start_of_image>"], eoi_token_index=token_ids["<end_of_image>"],
        image_token_index=token_ids["<image_soft_token>"], pad_token_id=token_ids["<pad>"],
        bos_token_id=token_ids["<bos>"], eos_token_id=token_ids["<eos>"],
    )


def write_model_dir(spec: ModelSpec, out_dir: str | Path) -> Path:
    """A model folder for ``spec`` without weights: ``config.json``, generation config and a
    Gemma3 processor (the project's tokenizer, ``platform.clinical.models.train_tokenizer``)."""
    from platform.clinical import models

    from transformers import Gemma3Processor, GenerationConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = models.train_tokenizer(models.TinyVLMSpec())
    ids = {t: tok.convert_tokens_to_ids(t) for t in models.SPECIAL_TOKENS}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config(spec, ids).save_pretrained(out)
    GenerationConfig(eos_token_id=[ids["<eos>"], ids[models.END_OF_TURN]],
                     pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"]).save_pretrained(out)
    Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(
            size={"height": spec.image_size, "width": spec.image_size}, do_pan_and_scan=False),
        tokenizer=tok, image_seq_length=spec.mm_tokens_per_image, chat_template=models.CHAT_TEMPLATE,
    ).save_pretrained(out)
    (out / "gpu_kit_spec.json").write_text(json.dumps(asdict(spec), sort_keys=True))
    return out


def build_random(path: str | Path, dtype: str, device: str, seed: int) -> Any:
    """The model of ``path``'s config with random weights, built directly on ``device`` in
    ``dtype`` (same seed and device -> same weights). The image projector is re-initialised as
    ``platform.clinical.models.build_tiny_vlm`` does (Gemma3 zeroes it at init)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        with torch.no_grad():
            torch.nn.init.normal_(proj, std=1.0 / config.vision_config.hidden_size**0.5)
    return model.to(device)


@contextlib.contextmanager
def random_weights(device: str, seed: int = 0) -> Iterator[None]:
    """Inside: ``platform.clinical.models.load_model(path, dtype)`` builds random weights on
    ``device`` (:func:`build_random`) instead of reading a checkpoint. ``HFBackend`` and
    ``LearnerImpl`` look the loader up at call time, so their constructors run unchanged."""
    from platform.clinical import models

    original = models.load_model
    models.load_model = lambda path, dtype="float32": build_random(path, dtype, device, seed)
    try:
        yield
    finally:
        models.load_model = original


# ------------------------------------------------------------------------------ the bound

def decode_weight_bytes(model: Any) -> int:
    """Bytes of the weights one decode step reads: the text decoder, its final norm and the
    LM head (tied to the embedding: counted once; the embedding lookup itself reads only
    ``batch`` rows). The vision tower and projector run at prefill only: not counted."""
    lm = model.model.language_model
    seen = {id(p) for p in lm.parameters()}
    total = sum(p.numel() * p.element_size() for p in lm.parameters())
    head = model.lm_head.weight
    if id(head) not in seen:
        total += head.numel() * head.element_size()
    return int(total)


def kv_bytes(layer_types: list[str], sliding_window: int, num_kv_heads: int, head_dim: int,
             batch: int, context: int, dtype_bytes: int) -> int:
    """KV-cache bytes one decode step reads at ``context`` cached positions: per layer K and V,
    ``batch x kv_heads x head_dim`` each per position, sliding layers at most the window."""
    positions = sum(min(context, sliding_window) if t == "sliding_attention" else context
                    for t in layer_types)
    return 2 * batch * num_kv_heads * head_dim * dtype_bytes * positions


def mean_decode_bytes(weight_bytes: int, spec: ModelSpec, batch: int, prompt_len: int,
                      new_tokens: int, dtype_bytes: int) -> float:
    """Mean bytes read per decode step over a ``new_tokens`` completion: the first token comes
    from the prefill; decode step ``k = 1 .. new_tokens-1`` attends to ``prompt_len + k``
    positions. Weights are read once per step, whatever the batch."""
    steps = range(1, max(new_tokens, 2))
    kv = [kv_bytes(spec.layer_types, spec.sliding_window, spec.num_kv_heads, spec.head_dim,
                   batch, prompt_len + k, dtype_bytes) for k in steps]
    return weight_bytes + sum(kv) / len(kv)


def bandwidth_bound(batch: int, bandwidth_bytes_per_s: float, bytes_per_step: float) -> float:
    """Upper bound on decode tokens/s: ``batch x bandwidth / bytes read per decode step``."""
    return batch * bandwidth_bytes_per_s / bytes_per_step


# ------------------------------------------------------------------------------ inputs

_WORDS = ["chest", "radiograph", "shows", "a", "small", "left", "pleural", "effusion", "with", "no", "pneumothorax;", "the", "cardiac", "silhouette", "is", "normal", "and", "there", "is", "a", "nodule", "in", "the", "right", "upper", "lobe;", "which", "of", "the", "following", "is", "the", "most", "likely", "diagnosis", "for", "this", "patient", "of", "64", "years"]

def image_png(seed: int, size: int) -> bytes:
    """A random RGB image of ``size x size`` as PNG bytes (deterministic in ``seed``)."""
    import numpy as np
    from PIL import Image

    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def text_of_tokens(tokenizer: Any, n: int, seed: int = 0) -> str:
    """Clinical-looking text of about ``n`` tokens under ``tokenizer`` (exact length is reported
    by the caller from the encoded prompt)."""
    import random

    if n <= 0:
        return ""
    rng = random.Random(seed)
    words: list[str] = []
    while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < n:
        words.extend(rng.choice(_WORDS) for _ in range(16))
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids)


def chat_request(tokenizer: Any, batch: int, group: int, text_tokens: int, new_tokens: int,
                 image_size: int, images: list[bytes] | None = None, temperature: float = 1.0,
                 seed: int = 0) -> Any:
    """A GenerationRequest of ``batch`` sequences: ``batch // group`` prompts, each an image and
    ``text_tokens`` of text, ``group`` samples each (GRPO's G)."""
    from platform.clinical.generation import GenerationRequest

    prompts = max(1, batch // group)
    pool = images or [image_png(i, image_size) for i in range(min(prompts, 8))]
    msgs = [[{"role": "user", "content": [
        {"type": "image"},
        {"type": "text", "text": f"Case {i}. " + text_of_tokens(tokenizer, text_tokens, seed=i)}]}]
        for i in range(prompts)]
    return GenerationRequest(prompts=msgs, images=[pool[i % len(pool)] for i in range(prompts)],
                             n=min(group, batch), temperature=temperature,
                             max_new_tokens=new_tokens, seed=seed)


def train_batch(processor: Any, sequences: int, seq_len: int, image_size: int, vocab_size: int,
                seed: int = 0) -> Any:
    """A learner ``TrainBatch`` of ``sequences`` rows of exactly ``seq_len`` tokens: a chat
    prompt with one image (the processor's own expansion into image tokens) + a completion of
    random ordinary tokens filling the rest; random advantages and two groups."""
    from platform.clinical.generation import decode_image
    from platform.clinical.learner import TrainBatch
    from platform.clinical.models import SPECIAL_TOKENS, tokenizer_of

    import numpy as np

    tok = tokenizer_of(processor)
    img = image_png(seed, image_size)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Findings?"}]}],
        add_generation_prompt=True, tokenize=False)
    prompt = processor(text=[text], images=[[decode_image(img)]], add_special_tokens=False,
                       return_tensors="np")["input_ids"][0].tolist()
    if len(prompt) >= seq_len:
        raise ValueError(f"learner sequence length {seq_len} is shorter than the prompt with an "
                         f"image ({len(prompt)} tokens)")
    rng = np.random.default_rng(seed)
    special = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    low = max(special) + 1  # the project's tokenizer numbers its special tokens first
    comp = [rng.integers(low, vocab_size, size=seq_len - len(prompt)).tolist() for _ in range(sequences)]
    return TrainBatch(prompt_ids=[list(prompt) for _ in range(sequences)], completion_ids=comp,
                      advantages=rng.standard_normal(sequences).tolist(),
                      images=[img] * sequences, groups=[i % 2 for i in range(sequences)])
