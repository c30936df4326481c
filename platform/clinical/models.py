"""Policy models: a tiny Gemma3 VLM built offline (MedGemma's architecture), or any local HF dir.

* :func:`build_tiny_vlm` writes a deterministic, randomly initialised ``Gemma3ForConditionalGeneration``
  with a locally trained byte-level BPE tokenizer, a Gemma-style chat template and a Gemma3
  processor (PIL image backend, no torchvision). Same spec -> byte-identical weights.
* :func:`resolve_model_path` returns ``--model PATH`` after checking it, or the cached tiny build
  under ``<repo>/.cache/models/`` (git-ignored), building it on first use (atomic rename, so
  concurrent builders never see half-written folders).
* :func:`load_policy` loads model + processor (or tokenizer, for text-only models).

Pitfalls (DESIGN.md): Gemma3's init zeroes the image projector, so it is re-initialised here or
images would have no effect; special tokens (image placeholders, turn markers) must be
suppressed when sampling: :func:`suppressed_token_ids`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from platform.cluster import REPO_ROOT
from typing import Any

from base.errors import UsageError

CACHE_DIR = REPO_ROOT / ".cache" / "models"
BUILD_VERSION = 1  # bump when the build recipe changes (invalidates the cache key)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
END_OF_TURN = "<end_of_turn>"
SPEC_FILE = "equirl_spec.json"  # marks a built-in tiny build (and models trained from one)

# Gemma-style chat template; an image content item becomes <start_of_image>, which the Gemma3
# processor expands into boi + mm_tokens_per_image soft tokens + eoi.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# Deterministic tokenizer corpus: answer formats, option letters, common clinical words.
_CORPUS_WORDS = (
    "Question Answer answer option options image shows finding findings diagnosis patient "
    "chest x-ray radiograph dermoscopy mammogram fundus lesion benign malignant normal abnormal "
    "effusion nodule mass melanoma nevus carcinoma keratosis pneumonia cardiomegaly edema "
    "density calcification birads age sex male female years which of the following most likely "
    "is are a an and or not no yes with without left right A B C D E F The the think because "
    "<answer> </answer> <think> </think> final letter choose select one"
).split()


@dataclass(frozen=True)
class TinyVLMSpec:
    """Dimensions of the built-in tiny Gemma3 VLM (the cache key is a hash of these)."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    vision_hidden_size: int = 32
    vision_layers: int = 1
    image_size: int = 32
    patch_size: int = 8
    mm_tokens_per_image: int = 4
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "v": BUILD_VERSION}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _corpus(seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        words = [rng.choice(_CORPUS_WORDS) for _ in range(rng.randint(4, 16))]
        lines.append(" ".join(words))
    for letter in "ABCDEF":
        lines.append(f"Answer: {letter}. <answer>{letter}</answer> The answer is {letter}")
    return lines


def train_tokenizer(spec: TinyVLMSpec):
    """Byte-level BPE trained on a fixed corpus -> ``PreTrainedTokenizerFast`` with the template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(spec.seed), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>", padding_side="left",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_vlm(out_dir: str | Path, spec: TinyVLMSpec = TinyVLMSpec()) -> Path:
    """Write model + processor for ``spec`` into ``out_dir`` (deterministic). Returns the path."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = train_tokenizer(spec)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tok)
    cfg = Gemma3Config(
        text_config=dict(
            vocab_size=vocab, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
            num_key_value_heads=1, head_dim=spec.head_dim, query_pre_attn_scalar=spec.head_dim,
            max_position_embeddings=1024, sliding_window=128,
            layer_types=(["sliding_attention"] * (spec.num_layers - 1) + ["full_attention"]),
            pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
        ),
        vision_config=dict(
            hidden_size=spec.vision_hidden_size, intermediate_size=2 * spec.vision_hidden_size,
            num_hidden_layers=spec.vision_layers, num_attention_heads=2,
            image_size=spec.image_size, patch_size=spec.patch_size, vision_use_head=False,
        ),
        mm_tokens_per_image=spec.mm_tokens_per_image, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
        pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = Gemma3ForConditionalGeneration(cfg)
        # Gemma3 zeroes the projector at init: images would have no effect.
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        torch.nn.init.normal_(proj, std=1.0 / spec.vision_hidden_size**0.5)
    model.generation_config.eos_token_id = [ids["<eos>"], ids[END_OF_TURN]]
    model.generation_config.pad_token_id = ids["<pad>"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(
            size={"height": spec.image_size, "width": spec.image_size}, do_pan_and_scan=False),
        tokenizer=tok, image_seq_length=spec.mm_tokens_per_image, chat_template=CHAT_TEMPLATE,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / SPEC_FILE).write_text(json.dumps(asdict(spec), sort_keys=True))
    return out


def is_builtin(path: str | Path) -> bool:
    """True for the built-in tiny VLM and for models exported from a run that started from it
    (the export keeps its ``equirl_spec.json``): they answer in option letters only."""
    return (Path(path) / SPEC_FILE).is_file()


def cached_tiny_vlm(spec: TinyVLMSpec = TinyVLMSpec(), cache_dir: Path | None = None) -> Path:
    """Path of the tiny build for ``spec``, building it once (atomic rename into the cache)."""
    cache = Path(cache_dir or CACHE_DIR)
    final = cache / f"tiny-gemma3-{spec.key()}"
    if (final / "config.json").exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        build_tiny_vlm(tmp, spec)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; its build is identical
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_model_path(path: str | None, spec: TinyVLMSpec = TinyVLMSpec()) -> Path:
    """``--model PATH`` checked (UsageError naming ``model.path``), or the cached tiny VLM."""
    if not path:
        return cached_tiny_vlm(spec)
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UsageError(f"model.path: {p} is not a directory (expected a local Hugging Face model dir)")
    if not (p / "config.json").exists():
        raise UsageError(f"model.path: {p} has no config.json (expected a local Hugging Face model dir)")
    return p.resolve()


def load_processor(path: str | Path) -> Any:
    """The model dir's processor if it has one (VLMs), else its tokenizer (left padding)."""
    from transformers import AutoProcessor, AutoTokenizer

    p = Path(path)
    if (p / "processor_config.json").exists() or (p / "preprocessor_config.json").exists():
        proc = AutoProcessor.from_pretrained(p, local_files_only=True)
        proc.tokenizer.padding_side = "left"
        return proc
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def load_model(path: str | Path, dtype: str = "float32") -> Any:
    """Load a causal LM or an image-text-to-text model from a local dir (no hub access)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    p = Path(path)
    config = AutoConfig.from_pretrained(p, local_files_only=True)
    torch_dtype = getattr(torch, dtype)
    is_vlm = hasattr(config, "vision_config")
    cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    return cls.from_pretrained(p, local_files_only=True, dtype=torch_dtype)


def load_policy(path: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, processor_or_tokenizer)`` from a local model dir."""
    return load_model(path, dtype), load_processor(path)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Tokens that end a completion: eos and Gemma's ``<end_of_turn>`` when present."""
    ids = [tokenizer.eos_token_id]
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN) if END_OF_TURN in tokenizer.get_vocab() else None
    if eot is not None and eot != tokenizer.unk_token_id:
        ids.append(eot)
    return [i for i in dict.fromkeys(ids) if i is not None]


def suppressed_token_ids(tokenizer: Any) -> list[int]:
    """Special tokens a completion must never sample (image placeholders, pad, bos, ...)."""
    stops = set(stop_token_ids(tokenizer))
    special = {int(i) for i in tokenizer.all_special_ids} | _added_special_ids(tokenizer)
    return sorted(special - stops)


def _added_special_ids(tokenizer: Any) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i) for i, tok in decoder.items() if getattr(tok, "special", False)}


def letter_token_ids(tokenizer: Any, letters: str) -> list[int]:
    """Token ids of single letters (each must be one token: UsageError otherwise)."""
    vocab = tokenizer.get_vocab()
    missing = [c for c in letters if c not in vocab]
    if missing:
        raise UsageError(f"rollout.answer_only: letters {missing} are not single tokens of this tokenizer")
    return [vocab[c] for c in letters]
