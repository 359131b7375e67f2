"""The barge-in arithmetic of the turn context (omnichannel/turn_context.py): what the caller did
not hear; pure functions, tested directly."""

from __future__ import annotations

import pytest

from omnichannel.turn_context import (
    BargeIn,
    TurnFacts,
    heard_position,
    turn_context_slots,
    unheard_remainder,
)

pytestmark = pytest.mark.unit

POLICY = (
    "Here's our refund policy. You can return most items within 30 days of delivery for a full "
    "refund. Items must be unused and in their original packaging. Once we receive your return, "
    "we inspect it within three business days."
)


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


@pytest.mark.parametrize(
    "offer, intent, kept",
    [
        ("callback", "deny", True),  # a no to the hand-off's callback goes on with the hand-off
        ("callback", "affirm", True),
        ("callback", "check_order_status", False),
        ("tracking_link", "deny", False),  # other offers' noes need nothing more
    ],
)
def test_which_answers_keep_the_offer(offer: str, intent: str, kept: bool) -> None:
    facts = TurnFacts(
        metadata={"channel": "voice"},
        input_channel="vapi",
        intent=intent,
        slots={"channel": "voice", "interrupted": False, "offer": offer},
        bot_events=[],
    )
    assert (("offer", None) not in turn_context_slots(facts)) is kept
