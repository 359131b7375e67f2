"""Customer text normalised for the classifier (omnichannel/nlu/customer_text.py): shorthand,
transcripts and typed text of one request read alike, and words keep their offsets."""

from __future__ import annotations

import re

import pytest

from omnichannel.nlu.customer_text import (
    SHORTHAND,
    Word,
    english_words,
    join_contractions,
    normalise,
    shorthand_with,
)

pytestmark = pytest.mark.unit


def _words(text: str) -> list:
    """Whitespace words with offsets, apostrophes split off as Rasa's tokenizer splits them."""
    return [Word(m.group(), m.start(), m.end()) for m in re.finditer(r"[\w#]+", text)]


def _read(text: str, shorthand=None) -> str:
    return " ".join(w.text for w in normalise(join_contractions(_words(text), text), shorthand))


@pytest.mark.parametrize(
    "text, reads",
    [
        ("wheres my pkg", "wheres my package"),
        ("where's my package", "wheres my package"),
        ("don’t", "dont"),
        ("r u a bot", "are you a bot"),
        ("thx!! lol", "thanks"),
        ("ttyl", "talk to you later"),
        ("hiii", "hi"),
        ("helloooo", "hello"),
        ("okkk", "ok"),
        ("tracking # pls", "tracking number please"),
        ("um can I uh talk to someone", "can i talk to someone"),
        ("I- I just want a person", "i just want a person"),
        ("wait wait wait", "wait"),
        ("has it shipped yet or", "has it shipped yet"),
    ],
)
def test_shorthand_transcripts_and_typing_read_alike(text: str, reads: str) -> None:
    assert _read(text) == reads


def test_spoken_digits_are_never_taken_for_a_stutter() -> None:
    assert _read("five five five five five") == "five five five five five"
    assert _read("it's 4 4 0 1 3") == "its 4 4 0 1 3"


def test_a_message_of_only_fillers_keeps_them() -> None:
    assert _read("um") == "um"
    assert _read("uh huh") == "huh"
    assert _read("lol") == "lol"
    assert _read("or") == "or"


def test_words_keep_their_offsets_in_the_original_text() -> None:
    text = "um what's ur order #"
    words = normalise(join_contractions(_words(text), text))
    assert [(w.text, text[w.start : w.end]) for w in words] == [
        ("whats", "what's"),
        ("your", "ur"),
        ("order", "order"),
        ("number", "#"),
    ]


def test_ambiguous_shorthand_is_left_to_the_classifier() -> None:
    assert "y" not in SHORTHAND and "ya" not in SHORTHAND
    assert _read("y") == "y"


def test_designers_add_and_remove_shorthand() -> None:
    table = shorthand_with({"cx": "customer service", "rep": None})
    assert _read("cx rep", table) == "customer service rep"
    with pytest.raises(ValueError):
        shorthand_with({"cx": 3})


def test_english_comes_from_the_frequency_dictionary() -> None:
    words = english_words()
    assert len(words) > 80_000
    assert {"order", "refund", "hello"} <= words
