"""Spelling corrected towards the training vocabulary (omnichannel/nlu/spelling.py): typos of
known words are fixed, English words, shorthand and names the model never saw are left alone."""

from __future__ import annotations

import pytest

from omnichannel.nlu.spelling import SpellingCorrector

pytestmark = pytest.mark.unit

VOCABULARY = "where is my order tracking number refund return package shipment delivery"


def _corrector() -> SpellingCorrector:
    return SpellingCorrector.learn((VOCABULARY + " order order").split())


def test_typos_of_training_words_are_corrected() -> None:
    corrector = _corrector()
    assert [corrector.correct(w) for w in ["ordr", "trackin", "refnd", "pakage", "shipmnt"]] == [
        "order",
        "tracking",
        "refund",
        "package",
        "shipment",
    ]


def test_known_english_short_and_unmatched_words_are_left_alone() -> None:
    corrector = _corrector()
    # "parcel" is English though the model never saw it; "lol" is short; "frother" matches
    # nothing near enough; digits are not words.
    assert [corrector.correct(w) for w in ["parcel", "lol", "frother", "40213", "order"]] == [
        "parcel",
        "lol",
        "frother",
        "40213",
        "order",
    ]


def test_short_words_allow_one_edit_only() -> None:
    corrector = SpellingCorrector.learn(["refund"])
    assert corrector.correct("rfnd") == "rfnd"  # two edits from a six-letter word: too far
    assert corrector.correct("refnd") == "refund"


def test_the_most_frequent_closest_word_wins() -> None:
    corrector = SpellingCorrector({"order": 10, "odder": 1})
    assert corrector.correct("ordxr") == "order"
    assert SpellingCorrector.learn([]).vocabulary == {}


def test_a_slip_met_once_is_not_learnt_as_a_word() -> None:
    corrector = SpellingCorrector.learn(["mobile", "mobile", "mibile", "uh-huh", "frother"])
    assert set(corrector.vocabulary) == {"mobile", "uh-huh", "frother"}
    assert corrector.correct("wibble") == "wibble"  # no longer "corrected" towards the slip


def test_what_the_model_knows() -> None:
    corrector = _corrector()
    assert corrector.knows("Order") and corrector.knows("#40213") and corrector.knows("2")
    assert not corrector.knows("blorft")
