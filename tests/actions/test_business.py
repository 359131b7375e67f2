"""Order status and tracking in each channel's form, through the trained assistant and the
action server (REST turns stating the channel as the connectors do)."""

from __future__ import annotations

import pytest

from devtools.stack import RasaStack
from tests.actions.helpers import new_conversation, say, texts, tracker

pytestmark = pytest.mark.rasa_server

LINK = "https://track.acme-shop.example/1Z999AA10123456784"


def test_voice_speaks_the_date_and_offers_to_text_the_link(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    [message] = say(rasa_stack, sender, "where is order 12345", channel="voice")

    assert message["text"] == (
        "Order 12345, the trail running shoes, has shipped with UPS and should arrive on "
        "Thursday, November 26th. Would you like me to text you the tracking link?"
    )
    assert not message.get("buttons")
    assert tracker(rasa_stack, sender)["slots"]["offer"] == "tracking_link"


def test_sms_gets_one_short_line_with_the_link(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    [message] = say(rasa_stack, sender, "where is order 12345", channel="sms")

    assert message["text"] == (
        f"Order 12345 (Trail running shoes): shipped via UPS, arriving Thu Nov 26. Track: {LINK}"
    )
    assert len(message["text"]) <= 160
    assert tracker(rasa_stack, sender)["slots"]["offer"] is None


def test_chat_gets_markdown_and_a_track_package_button(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    [message] = say(rasa_stack, sender, "where is order 12345", channel="chat")

    assert message["text"] == (
        "**Order 12345** (Trail running shoes) has shipped with UPS and should arrive on "
        "**Thursday, November 26, 2026**."
    )
    assert message["buttons"] == [{"title": "Track package", "payload": LINK}]


def test_delivered_order_offers_nothing_on_voice(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    [message] = say(rasa_stack, sender, "where is order 77801", channel="voice")

    assert message["text"] == "Order 77801, the gift card, was delivered on Friday, November 6th."
    assert tracker(rasa_stack, sender)["slots"]["offer"] is None


def test_tracking_number_by_channel_without_asking_for_the_order_again(
    rasa_stack: RasaStack,
) -> None:
    sender = new_conversation()
    say(rasa_stack, sender, "where is order 12345", channel="voice")
    [by_sms] = say(rasa_stack, sender, "what's my tracking number", channel="sms")
    [in_chat] = say(rasa_stack, sender, "what's my tracking number", channel="chat")

    assert by_sms["text"] == f"Order 12345 UPS tracking 1Z999AA10123456784: {LINK}"
    assert in_chat["text"] == (
        "The **UPS** tracking number for order 12345 is `1Z999AA10123456784`."
    )
    assert in_chat["buttons"] == [{"title": "Track package", "payload": LINK}]


def test_order_not_shipped_yet_has_no_tracking(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    [message] = say(rasa_stack, sender, "tracking number for order 40213 please", channel="voice")

    assert message["text"] == (
        "Order 40213 hasn't shipped yet, so there's no tracking number. It should arrive on "
        "Monday, November 30th."
    )


def test_voice_hand_off_transfers_to_the_configured_number(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    messages = say(rasa_stack, sender, "I want to talk to a human", channel="voice")

    # Rasa's REST channel hands the text and the custom payload over as two messages.
    assert [m.get("text") for m in messages if m.get("text")] == [
        "I'll put you through to a member of our support team. They'll have this whole "
        "conversation in front of them."
    ]
    assert [m["custom"] for m in messages if m.get("custom")] == [
        {
            "call_control": "transfer",
            "destination": "+14155550100",
            "content": "Transferring you now.",
        }
    ]


def test_chat_hand_off_is_a_clear_message(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    messages = say(rasa_stack, sender, "I want to talk to a human", channel="chat")

    assert [m.get("text") for m in messages] == [
        "I'll connect you with a member of our support team. They'll have this whole "
        "conversation in front of them."
    ]
    assert not any("custom" in m for m in messages)


def test_a_wrong_number_is_asked_again_for_the_same_request(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    say(rasa_stack, sender, "I want a refund", channel="chat")

    wrong = texts(say(rasa_stack, sender, "99999", channel="chat"))
    corrected = texts(say(rasa_stack, sender, "55555", channel="chat"))

    assert wrong == [
        "I couldn't find order 99999. Please check the number.",
        "What's your order number? It's the 5-digit number in your confirmation email.",
    ]
    # The corrected number answers the refund request, not an order-status question.
    assert corrected == [
        "I've started a refund request for order 55555. You'll get a return label by email "
        "within the hour."
    ]


def test_never_mind_leaves_the_order_number_question(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    say(rasa_stack, sender, "where is my order", channel="sms")

    reply = texts(say(rasa_stack, sender, "never mind", channel="sms"))

    assert reply == ["No problem. Anything else I can help with?"]
    state = tracker(rasa_stack, sender)
    assert state["active_loop"] == {} or state["active_loop"].get("name") is None
    assert texts(say(rasa_stack, sender, "nope", channel="sms")) == [
        "Goodbye, and thanks for shopping with Acme!"
    ]


def test_order_number_spoken_digit_by_digit(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    say(rasa_stack, sender, "where is my order", channel="voice")

    [message] = say(rasa_stack, sender, "it's one two three four five", channel="voice")

    assert message["text"].startswith("Order 12345, the trail running shoes, has shipped")


def test_help_outside_sms_names_no_sms_keywords(rasa_stack: RasaStack) -> None:
    [message] = say(rasa_stack, new_conversation(), "what can you do", channel="chat")

    assert "STOP" not in message["text"] and "order" in message["text"]


def test_hold_on_while_asked_for_the_order_number_gives_time(rasa_stack: RasaStack) -> None:
    sender = new_conversation()
    say(rasa_stack, sender, "what's my tracking number", channel="chat")

    waited = texts(say(rasa_stack, sender, "hold on, let me find it", channel="chat"))
    [found] = say(rasa_stack, sender, "it's 40213", channel="chat")

    assert waited == [
        "Sure, take your time.",
        "What's your order number? It's the 5-digit number in your confirmation email.",
    ]
    assert found["text"].startswith("Order 40213 hasn't shipped yet")
