"""Channel forms and limits (actions/formatting.py) and the barge-in arithmetic
(actions/barge_in.py): pure functions, tested directly."""

from __future__ import annotations

from datetime import date

import pytest

from actions.barge_in import BargeIn, heard_position, is_noise, unheard_remainder
from actions.formatting import (
    date_for,
    fit,
    sms_units,
    split_sentences,
    spoken_date,
)
from connectors.rendering import is_gsm7

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


@pytest.mark.parametrize(
    "heard, expected_start",
    [
        ("Here's our refund policy. You can return most items within", "You can return"),
        (
            "Here's our refund policy. You can return most items within 30 days of delivery for "
            "a full refund.",
            "Items must be unused",
        ),
        (
            "Here's our refund policy. You can return most items within 30 days of delivery for a "
            "full refund. Items must be unused and in their",
            "Items must be unused",
        ),
        ("Here's our", "Here's our refund policy."),
    ],
)
def test_the_unheard_remainder_starts_at_the_interrupted_sentence(
    heard: str, expected_start: str
) -> None:
    barge_in = BargeIn(sent_text=POLICY, heard_text=heard, heard_ratio=len(heard) / len(POLICY))
    rest = unheard_remainder(barge_in, POLICY)
    assert rest.startswith(expected_start)
    assert POLICY.endswith(rest)


def test_remainder_comes_from_the_written_message_when_the_spoken_one_differs() -> None:
    written = "Order 12345 shipped. Track it at https://t.example/1Z. It arrives Thursday."
    spoken = "Order 1 2 3 4 5 shipped. Track it at the link. It arrives Thursday."
    barge_in = BargeIn(
        sent_text=spoken, heard_text="Order 1 2 3 4 5 shipped. Track", heard_ratio=0.4
    )
    assert unheard_remainder(barge_in, written) == (
        "Track it at https://t.example/1Z. It arrives Thursday."
    )


def test_a_transcript_that_does_not_align_falls_back_to_the_ratio() -> None:
    assert heard_position(POLICY, "completely different words", 0.5) == round(0.5 * len(POLICY))


def test_barge_in_report_is_parsed_at_the_edge() -> None:
    assert BargeIn.parse({"sent_text": "Hi.", "heard_text": "", "heard_ratio": 0}) is not None
    assert BargeIn.parse({"sent_text": "Hi.", "heard_ratio": "x"}) is None
    assert BargeIn.parse({"sent_text": "", "heard_text": "", "heard_ratio": 0.1}) is None
    assert BargeIn.parse("nope") is None
    assert (
        BargeIn.parse({"sent_text": "Hi.", "heard_text": "Hi.", "heard_ratio": 1}).cut_off is False
    )


def test_noise_is_a_few_characters() -> None:
    assert is_noise("hm") and is_noise("uh.") and is_noise("")
    assert not is_noise("what about my refund")
