"""Reward functions for clinical multiple-choice answers, registered by name in ``REWARDS``.

Entries are factories: ``fn = REWARDS.get("accuracy")(**kwargs)`` and then
``fn(completions: list[str], samples: list[dict]) -> np.ndarray`` of shape (len(completions),),
dtype float32. ``samples`` are row dicts with at least ``options`` and ``answer``.

- ``accuracy``: 1 if the option parsed from the free-text completion is the answer, else 0.
  Parsing (``parse_choice``) is robust to garbage: anything ambiguous or unparseable scores 0.
- ``format``: 1 if the completion follows the requested ``<answer>X</answer>`` format.
- ``accuracy+format``: ``accuracy + format_weight * format``.
- ``faro``: Faro fairness-constrained reward model (arXiv 2602.07799), ``algorithms/faro.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from base.registry import Registry
from envs.clinical.prompts import LETTERS

RewardFn = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], np.ndarray]
REWARDS: Registry = Registry("reward function")

MAX_CHARS = 20_000  # longer completions are cut (parsing stays linear and cheap)
_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_PHRASE = re.compile(r"(?:answer|option|choice|diagnosis)\s*(?:is|:|=|-)\s*(?:option\s*)?"
                     r"[\(\[]?([^\n.;,]*)", re.IGNORECASE)
_MARKER = re.compile(r"(?<![A-Za-z0-9])[\(\[]?([A-Z])[\)\]](?![A-Za-z0-9])")
_LONE = re.compile(r"^[\s\(\[\"'*]*([A-Za-z])[\s\)\]\.:\"'*]*$")


def _opts(sample: Mapping[str, Any]) -> list[str]:
    o = sample["options"]
    return [str(x) for x in (o.tolist() if hasattr(o, "tolist") else o)]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^0-9a-z+]+", " ", s.lower())).strip()


def _mentions(text: str, options: Sequence[str]) -> set[int]:
    """Indices of options whose (normalized) text appears as whole words in ``text``.

    Longer options win over options contained in them ("no finding" hides "finding").
    """
    t = f" {_norm(text)} "
    found: set[int] = set()
    for i in sorted(range(len(options)), key=lambda k: -len(_norm(options[k]))):
        o = _norm(options[i])
        if o and f" {o} " in t:
            found.add(i)
            t = t.replace(f" {o} ", " \x00 ")
    return found


def _one(candidates: set[int]) -> int | None:
    return next(iter(candidates)) if len(candidates) == 1 else None


def _parse_fragment(text: str, options: Sequence[str]) -> tuple[bool, int | None]:
    """(decided, index) for a short answer fragment: a lone letter or an option's text."""
    n = len(options)
    m = _LONE.match(text)
    if m:
        k = LETTERS.find(m.group(1).upper())
        return True, (k if 0 <= k < n else None)
    norm = _norm(text)
    exact = [i for i, o in enumerate(options) if _norm(o) == norm and norm]
    if exact:
        return True, exact[0]
    m = re.match(r"^[\s\(\[]*([A-Z])[\)\]\.:]\s", text)  # "B) pneumonia", "B. pneumonia"
    if m:
        k = LETTERS.find(m.group(1))
        return True, (k if k < n else None)
    found = _mentions(text, options)
    if found:
        return True, _one(found)
    return False, None


def parse_choice(text: Any, options: Sequence[str]) -> int | None:
    """Index of the option chosen in free text, or None if absent, ambiguous or garbage.

    In order, the first rule that finds anything decides (several different choices -> None):
    1. ``<answer>...</answer>`` tags (all must agree);
    2. a phrase "answer is X" / "answer: X" (X a letter or an option's text);
    3. the whole reply is one letter or one option's text;
    4. letter markers "B)" / "(B)";
    5. option texts mentioned as whole words.
    """
    if not isinstance(text, str) or not options:
        return None
    text = text[:MAX_CHARS]
    options = [str(o) for o in options]
    tags = _TAG.findall(text)
    if tags:
        picks = {_parse_fragment(t.strip(), options)[1] for t in tags}
        return _one(picks) if None not in picks else None
    phrases = [_parse_fragment(p.strip(), options) for p in _PHRASE.findall(text)]
    picks = {k for decided, k in phrases if decided}
    if picks:
        return _one(picks) if None not in picks else None
    m = _LONE.match(text)
    if m:
        k = LETTERS.find(m.group(1).upper())
        return k if 0 <= k < len(options) else None
    norm = _norm(text)
    exact = [i for i, o in enumerate(options) if norm and _norm(o) == norm]
    if exact:
        return exact[0]
    markers = {LETTERS.find(m) for m in _MARKER.findall(text)}
    if markers:
        return _one(markers) if all(k < len(options) for k in markers) else None
    return _one(_mentions(text, options))


def _check(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> None:
    if len(completions) != len(samples):
        raise ValueError(f"reward: {len(completions)} completions but {len(samples)} samples")
    for i, s in enumerate(samples):
        missing = [k for k in ("options", "answer") if k not in s]
        if missing:
            raise ValueError(f"reward: sample {i} lacks key(s) {missing}; samples are dataset "
                             "rows with at least 'options' and 'answer'")


@REWARDS.register("accuracy", help="1 if the option parsed from the completion is the answer")
def make_accuracy(correct: float = 1.0, incorrect: float = 0.0) -> RewardFn:
    """Accuracy reward factory: ``correct`` for the right option, ``incorrect`` otherwise."""

    def accuracy(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        _check(completions, samples)
        out = np.full(len(completions), incorrect, dtype=np.float32)
        for i, (c, s) in enumerate(zip(completions, samples)):
            opts = _opts(s)
            k = parse_choice(c, opts)
            if k is not None and opts[k] == s["answer"]:
                out[i] = correct
        return out

    return accuracy


_STRICT = re.compile(r"^(?:(?!<answer>).)*<answer>\s*([A-Z])\s*</answer>\s*$",
                     re.DOTALL | re.IGNORECASE)


def follows_format(text: Any, n_options: int) -> bool:
    """Exactly one ``<answer>X</answer>`` with X a valid letter, and nothing after it."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        return False
    m = _STRICT.match(text)
    return bool(m) and LETTERS.find(m.group(1).upper()) < n_options


@REWARDS.register("format", help="1 if the completion ends in exactly one <answer>X</answer>")
def make_format(value: float = 1.0) -> RewardFn:
    """Format reward factory: ``value`` when ``follows_format``, else 0."""

    def format_reward(completions: Sequence[str],
                      samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        _check(completions, samples)
        return np.array([value if follows_format(c, len(_opts(s))) else 0.0
                         for c, s in zip(completions, samples)], dtype=np.float32)

    return format_reward


@REWARDS.register("accuracy+format", help="accuracy + format_weight * format")
def make_accuracy_format(format_weight: float = 0.1, correct: float = 1.0,
                         incorrect: float = 0.0) -> RewardFn:
    """Sum of the accuracy reward and ``format_weight`` times the format reward."""
    acc, fmt = make_accuracy(correct, incorrect), make_format()

    def accuracy_format(completions: Sequence[str],
                        samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return acc(completions, samples) + np.float32(format_weight) * fmt(completions, samples)

    return accuracy_format


REWARDS.register("faro", "algorithms.faro:make_faro_reward",
                 help="Faro fairness-constrained reward model (algorithms/faro.py)")
