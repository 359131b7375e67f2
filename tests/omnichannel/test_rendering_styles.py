"""Channel styles (omnichannel/rendering/styles.py): the limits composed text is held to and dates
in each channel's form; pure functions, tested directly."""

from __future__ import annotations

from datetime import date

import pytest

from omnichannel.rendering.messages import split_sentences
from omnichannel.rendering.sms import is_gsm7, sms_units
from omnichannel.rendering.styles import date_for, fit, spoken_date

pytestmark = pytest.mark.unit

POLICY = (
    "Here's our refund policy. You can return most items within 30 days of delivery for a full "
    "refund. Items must be unused and in their original packaging. Once we receive your return, "
    "we inspect it within three business days."
)


def test_dates_in_each_channels_form() -> None:
    day = date(2026, 3, 4)
    assert spoken_date(day) == "Wednesday, March 4th"
    assert date_for("voice", date(2026, 11, 26)) == "Thursday, November 26th"
    assert date_for("voice", date(2026, 11, 22)) == "Sunday, November 22nd"
    assert date_for("voice", date(2026, 11, 11)) == "Wednesday, November 11th"
    assert date_for("sms", day) == "Wed Mar 4"
    assert date_for("chat", day) == "Wednesday, March 4, 2026"


def test_voice_form_is_two_plain_sentences_without_links_or_lists() -> None:
    text = (
        "**Sure!** See https://acme.example/help for more.\n- call us\n- write to us\n"
        "We are open daily. Weekends too."
    )
    spoken = fit(text, "voice")
    assert "http" not in spoken and "*" not in spoken and "\n" not in spoken
    # The sentence that only pointed at a link is gone; list items became sentences.
    assert spoken == "Sure! call us."


def test_voice_cuts_one_overlong_sentence_at_a_word() -> None:
    spoken = fit("word " * 200, "voice")
    assert len(spoken) <= 260 and spoken.endswith("word.")


def test_sms_form_keeps_whole_sentences_within_two_segments() -> None:
    sentences = [f"Sentence number {n} is here to take up room in the text." for n in range(10)]
    text = fit(" ".join(sentences), "sms")
    assert sms_units(text) <= 306
    assert text == " ".join(sentences[: len(split_sentences(text))])
    assert len(split_sentences(text)) >= 4


def test_sms_form_replaces_typographic_characters_with_gsm7_ones() -> None:
    text = fit("It\u2019s \u201cdone\u201d \u2014 really\u2026", "sms")
    assert text == 'It\'s "done" - really...'
    assert is_gsm7(text)


def test_sms_with_non_gsm_characters_counts_as_ucs2() -> None:
    text = fit("Cześć, tu sklep. " * 30, "sms")
    assert not is_gsm7(text)
    assert sms_units(text) <= 306
    assert len(text) <= 134


def test_chat_keeps_markdown_and_cuts_at_600() -> None:
    text = fit("**Bold** point. " * 60, "chat")
    assert text.startswith("**Bold** point.")
    assert len(text) <= 600 and text.endswith("point.")


def test_sentences_keep_their_closing_quote_or_bracket() -> None:
    assert split_sentences('He said "hi." It works (see the policy.) Done') == [
        'He said "hi."',
        "It works (see the policy.)",
        "Done",
    ]
