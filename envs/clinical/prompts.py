"""Chat prompts for clinical multiple-choice questions: one image + question + lettered options.

The requested answer format is ``<answer>B</answer>``; ``envs.clinical.rewards`` parses it (and
looser free-text answers) back to an option.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from base.errors import UsageError

LETTERS = string.ascii_uppercase
INSTRUCTION = "Reply with the letter of the correct option inside <answer></answer>, e.g. " \
              "<answer>A</answer>."


def _options(row: Mapping[str, Any]) -> list[str]:
    opts = row["options"]
    opts = list(opts.tolist() if hasattr(opts, "tolist") else opts)
    if not 2 <= len(opts) <= len(LETTERS):
        raise UsageError(f"sample {row.get('id', '?')!r}: options must have 2..{len(LETTERS)} "
                         f"entries, got {len(opts)}")
    return [str(o) for o in opts]


def format_options(options: Sequence[str]) -> str:
    """``["a", "b"]`` -> ``"A) a\\nB) b"``."""
    return "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))


def prompt_text(row: Mapping[str, Any], instruction: str = INSTRUCTION) -> str:
    """The text part of the prompt: question, lettered options, answer-format instruction."""
    return f"{str(row['question']).strip()}\n{format_options(_options(row))}\n{instruction}"


def build_messages(row: Mapping[str, Any], system: str | None = None,
                   instruction: str = INSTRUCTION) -> list[dict]:
    """Chat messages for a processor's ``apply_chat_template``.

    ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}]``,
    preceded by a system message if ``system`` is given. The image itself is passed to the
    processor separately (``envs.clinical.dataset.load_image(row)``).
    """
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [
        {"type": "image"},
        {"type": "text", "text": prompt_text(row, instruction)},
    ]})
    return messages


def answer_letter(row: Mapping[str, Any]) -> str:
    """The letter of the correct option, e.g. "B"."""
    opts = _options(row)
    if row["answer"] not in opts:
        raise UsageError(f"sample {row.get('id', '?')!r}: answer {row['answer']!r} is not one of "
                         f"{opts}")
    return LETTERS[opts.index(row["answer"])]
