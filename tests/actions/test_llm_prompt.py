"""The LLM fallback's prompt, built from a tracker as the action server receives it."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from rasa_sdk import Tracker

from actions.llm_fallback import build_messages, conversation_turns, fallback_streak
from omnichannel.orders import Customer
from omnichannel.rendering.styles import STYLES

pytestmark = pytest.mark.unit

#: The demo customer, who owns the demo orders (omnichannel/fixtures/orders.json).
OWNER = Customer(phone="+14155552671")


def make_tracker(events: List[Dict[str, Any]], slots: Dict[str, Any]) -> Tracker:
    latest = next(e for e in reversed(events) if e["event"] == "user")
    return Tracker("c_test", slots, latest, events, False, None, {}, "action_listen")


def user(text: str, channel: str, **metadata: Any) -> Dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "input_channel": {"voice": "vapi", "sms": "twilio_sms", "chat": "webchat"}[channel],
        "metadata": {"channel": channel, **metadata},
        "parse_data": {"intent": {"name": "nlu_fallback"}},
    }


def bot(text: str, **metadata: Any) -> Dict[str, Any]:
    return {"event": "bot", "text": text, "data": {}, "metadata": metadata}


EVENTS = [
    user("where is order 12345", "voice"),
    bot("Order 12345 has shipped. Would you like me to text you the tracking link?"),
    user("what's your refund policy", "voice"),
    bot("Here's our refund policy. You can return most items within 30 days."),
    user(
        "text me the tracking link",
        "voice",
        barge_in={
            "sent_text": "Here's our refund policy.",
            "heard_text": "Here's our",
            "heard_ratio": 0.3,
        },
    ),
    bot("Done, I've texted you the tracking link."),
    bot("Track it at https://t.example/1Z", channel="sms", sent_by="action_send_by_sms"),
    user("zxqv blorft", "chat"),
    bot("One moment.", utter_action="utter_one_moment"),
]


def test_every_turn_is_labelled_with_its_channel() -> None:
    turns = conversation_turns(make_tracker(EVENTS, {}))

    assert turns == [
        ("user", "voice", "where is order 12345"),
        (
            "assistant",
            "voice",
            "Order 12345 has shipped. Would you like me to text you the tracking link?",
        ),
        ("user", "voice", "what's your refund policy"),
        ("assistant", "voice", "Here's our [interrupted by the customer here]"),
        ("user", "voice", "text me the tracking link"),
        ("assistant", "voice", "Done, I've texted you the tracking link."),
        ("assistant", "sms", "Track it at https://t.example/1Z"),
        ("user", "chat", "zxqv blorft"),
    ]


SLOTS = {
    "channel": "sms",
    "order_number": "12345",
    "requested_slot": None,
    "unheard": {"text": "You can return most items within 30 days."},
    "last_call": {"summary": "The caller asked about order 12345.", "transcript": "x" * 5000},
}


def test_instructions_carry_the_channel_limits_slots_and_order() -> None:
    messages = build_messages(make_tracker(EVENTS, SLOTS), STYLES["sms"], OWNER)

    system = messages[0]["content"]
    assert "You are answering on: sms." in system
    assert "at most 306 characters" in system and "no markdown" in system
    assert "- order_number: 12345" in system
    assert "- last_call: The caller asked about order 12345." in system
    assert "x" * 100 not in system and "requested_slot" not in system and "unheard" not in system
    assert "- order 12345: items: Trail running shoes, status: shipped, carrier: UPS" in system
    assert messages[-1] == {"role": "user", "content": "[chat] zxqv blorft"}


def test_the_facts_of_someone_elses_order_never_reach_the_llm() -> None:
    """The slot fills from any message naming a number (even one NLU cannot place, which is
    what reaches the LLM), so the order's facts go in only for its owner."""
    for customer in (Customer(phone="+16175550123"), Customer()):
        system = build_messages(make_tracker(EVENTS, SLOTS), STYLES["sms"], customer)[0]
        assert "- order_number: 12345" in system["content"]
        assert "Trail running shoes" not in system["content"]
        assert "- order 12345:" not in system["content"]


def test_what_a_person_from_the_team_said_is_in_the_prompt_as_theirs() -> None:
    events = [
        user("I want to talk to a person", "sms"),
        bot("I've passed this to our support team."),
        bot("I've refunded order 12345.", agent={"id": "a1", "name": "Dana"}, channel="sms"),
        user("zxqv blorft", "chat"),
    ]
    tracker = make_tracker(events, {})
    assert conversation_turns(tracker)[2] == ("agent", "sms", "Dana: I've refunded order 12345.")
    messages = build_messages(tracker, STYLES["chat"], OWNER)
    assert {
        "role": "assistant",
        "content": "[sms, support team] Dana: I've refunded order 12345.",
    } in messages
    assert 'Turns labelled "support team" were written by a person' in messages[0]["content"]


def test_the_fallback_counts_its_own_answers_in_a_row() -> None:
    fallback = bot("Could you say more?", llm_fallback=True)
    offline = bot("Sorry.", utter_action="utter_llm_fallback_offline")
    answered = bot("Here's our refund policy.", utter_action="utter_refund_policy")
    latest = user("qwzx", "sms")
    assert fallback_streak(make_tracker([user("a", "sms"), fallback, latest], {})) == 1
    two = [user("a", "sms"), fallback, user("b", "sms"), offline, latest]
    assert fallback_streak(make_tracker(two, {})) == 2
    broken = [user("a", "sms"), fallback, user("refunds?", "sms"), answered, latest]
    assert fallback_streak(make_tracker(broken, {})) == 0
    # A turn taken back (a superseded voice turn) is not one of them.
    listen = {"event": "action", "name": "action_listen"}
    taken_back = [
        listen,
        user("a", "voice"),
        fallback,
        {"event": "rewind"},
        listen,
        user("a b", "voice"),
        fallback,
        latest,
    ]
    assert fallback_streak(make_tracker(taken_back, {})) == 1
