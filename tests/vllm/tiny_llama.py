"""Build a tiny random text causal LM on disk for vLLM CPU tests, offline.

Architecture: Llama (vLLM's most exercised path), head_dim 64 (the CPU attention backend
supports 32, 64, 80, ...), 2 layers, hidden 128, vocab of a byte-level BPE tokenizer trained
here on a few clinical sentences, with a chat template. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CORPUS = [
    "The chest radiograph shows a right lower lobe opacity consistent with pneumonia.",
    "No acute cardiopulmonary abnormality. Heart size is normal.",
    "Diagnosis: melanoma, benign nevus, basal cell carcinoma, or actinic keratosis.",
    "The patient is a 67 year old woman with cough and fever for three days.",
    "Answer with one word: yes or no. The answer is yes. The answer is no.",
    "Findings suggest pleural effusion; recommend follow-up imaging in six weeks.",
]


def build_tiny_llama(path: str | Path, *, head_dim: int = 64, num_heads: int = 2,
                     num_layers: int = 2, seed: int = 0) -> Path:
    """Write config, random weights (seeded) and tokenizer to ``path``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    vocab = 512  # >= tokenizer size, a multiple of 64
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=head_dim * num_heads,
                      intermediate_size=4 * head_dim * num_heads, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, num_key_value_heads=num_heads,
                      head_dim=head_dim, max_position_embeddings=512,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, tie_word_embeddings=False,
                      torch_dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits than the default init: greedy output is decisive
        model.lm_head.weight.normal_(0.0, 0.5)
    model.save_pretrained(path, safe_serialization=True)
    (path / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return path
