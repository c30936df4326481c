"""Prompt formatting and the reward registry (accuracy parsing robust to garbage, format)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from base.registry import RegistryError
from envs.clinical.prompts import answer_letter, build_messages, prompt_text
from envs.clinical.rewards import REWARDS, follows_format, parse_choice

OPTS = ["no finding", "pneumonia", "pleural effusion"]
ROW = {"id": "x", "question": "What is seen?", "options": np.array(OPTS, dtype=object),
       "answer": "pleural effusion"}


def test_messages_have_image_placeholder_and_lettered_options():
    msgs = build_messages(ROW, system="You are a radiologist.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    content = msgs[1]["content"]
    assert content[0] == {"type": "image"}
    text = content[1]["text"]
    assert text.startswith("What is seen?\nA) no finding\nB) pneumonia\nC) pleural effusion\n")
    assert "<answer>" in text and text == prompt_text(ROW)
    assert answer_letter(ROW) == "C"


@pytest.mark.parametrize("text,expected", [
    ("<answer>B</answer>", 1), ("<answer> c </answer>", 2), ("<answer>B) pneumonia</answer>", 1),
    ("<answer>pneumonia</answer>", 1), ("B", 1), ("b.", 1), ("(C)", 2), ("  A  ", 0),
    ("The answer is C.", 2), ("Answer: B) pneumonia", 1), ("answer: pneumonia", 1),
    ("I think it is pneumonia here", 1), ("no finding", 0), ("Pleural Effusion!", 2),
    ("Looking at it... C) pleural effusion", 2),
    # absent, ambiguous, out of range or garbage -> None
    ("finding", None), ("A lesion", None), ("A B C", None), ("A) x B) y C) z", None),
    ("pneumonia or pleural effusion", None), ("<answer>A</answer> <answer>B</answer>", None),
    ("<answer>Z</answer>", None), ("<answer>dunno</answer> B", None), ("D", None), ("", None),
    ("\x00\xff\ufffd", None), (None, None), (3, None), (b"B", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text, OPTS) == expected


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.lists(st.text(min_size=1, max_size=12), min_size=2,
                                       max_size=6, unique=True))
def test_parse_choice_never_raises_on_garbage(text, options):
    k = parse_choice(text, options)
    assert k is None or 0 <= k < len(options)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), st.integers(0, 2))
def test_tagged_letter_wins_over_preceding_text(prefix, k):
    prefix = prefix.replace("<answer>", "").replace("</answer>", "")
    assert parse_choice(f"{prefix}<answer>{'ABC'[k]}</answer>", OPTS) == k


def test_registered_rewards_score_batches():
    assert {"accuracy", "format", "accuracy+format", "faro"} <= set(REWARDS.names())
    comps = ["<answer>C</answer>", "C", "<answer>A</answer>", "blah", "x <answer>C</answer> y",
             "pleural effusion"]
    samples = [dict(ROW)] * len(comps)
    acc = REWARDS.get("accuracy")()(comps, samples)
    fmt = REWARDS.get("format")()(comps, samples)
    both = REWARDS.get("accuracy+format")(format_weight=0.5)(comps, samples)
    assert acc.dtype == np.float32 and acc.shape == (6,)
    np.testing.assert_array_equal(acc, [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(fmt, [1, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(both, acc + 0.5 * fmt)
    shifted = REWARDS.get("accuracy")(correct=2.0, incorrect=-1.0)(comps[:3], samples[:3])
    np.testing.assert_array_equal(shifted, [2, 2, -1])
    with pytest.raises(ValueError, match="3 completions but 2 samples"):
        REWARDS.get("accuracy")()(comps[:3], samples[:2])
    with pytest.raises(ValueError, match="sample 0 lacks key\\(s\\) \\['answer'\\]"):
        REWARDS.get("format")()(comps[:1], [{"options": OPTS}])
    with pytest.raises(RegistryError, match="known: accuracy"):
        REWARDS.get("bleu")
    assert "Faro" in REWARDS.help("faro")


def test_format_requires_a_single_valid_tag_at_the_end():
    assert follows_format("thinking...\n<answer>B</answer>\n", 3)
    assert not follows_format("<answer>D</answer>", 3)
    assert not follows_format("<answer>A</answer><answer>A</answer>", 3)
    assert not follows_format("<answer>pneumonia</answer>", 3)
    assert not follows_format(None, 3)
