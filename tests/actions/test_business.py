"""Order status and tracking in each channel's form, through the trained assistant and the
action server (REST turns stating the channel as the connectors do). Each test's customer has a
verified phone number and orders of their own (seeded like the demo orders, under fresh
numbers): orders are only told to their owner."""

from __future__ import annotations

import pytest

from testkit.stack import RasaStack
from tests.actions.helpers import (
    customer_conversation,
    customer_with_order,
    new_conversation,
    say,
    texts,
    tracker,
)
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

LINK = "https://track.acme-shop.example/1Z999AA10123456784"
DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
NOT_FOUND = "I couldn't find order {}. Please check the number."
ASK_NUMBER = "What's your order number? It's the 5-digit number in your confirmation email."
SIGN_IN = (
    "I can only look up orders for signed-in customers. Please sign in on our website and open "
    "the chat again, or text us from the phone number on the order."
)


def test_voice_speaks_the_date_and_offers_to_text_the_link(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack)
    [message] = say(rasa_stack, sender, f"where is order {number}", channel="voice")

    assert message["text"] == (
        f"Order {number}, the trail running shoes, has shipped with UPS and should arrive on "
        "Thursday, November 26th. Would you like me to text you the tracking link?"
    )
    assert not message.get("buttons")
    assert tracker(rasa_stack, sender)["slots"]["offer"] == "tracking_link"


def test_sms_gets_one_short_line_with_the_link(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack)
    [message] = say(rasa_stack, sender, f"where is order {number}", channel="sms")

    assert message["text"] == (
        f"Order {number} (Trail running shoes): shipped via UPS, arriving Thu Nov 26. Track: {LINK}"
    )
    assert len(message["text"]) <= 160
    assert tracker(rasa_stack, sender)["slots"]["offer"] is None


def test_chat_gets_markdown_and_a_track_package_button(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack)
    [message] = say(rasa_stack, sender, f"where is order {number}", channel="chat")

    assert message["text"] == (
        f"**Order {number}** (Trail running shoes) has shipped with UPS and should arrive on "
        "**Thursday, November 26, 2026**."
    )
    assert message["buttons"] == [{"title": "Track package", "payload": LINK}]


def test_delivered_order_offers_nothing_on_voice(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="77801")
    [message] = say(rasa_stack, sender, f"where is order {number}", channel="voice")

    assert message["text"] == (
        f"Order {number}, the gift card, was delivered on Friday, November 6th."
    )
    assert tracker(rasa_stack, sender)["slots"]["offer"] is None


def test_tracking_number_by_channel_without_asking_for_the_order_again(
    rasa_stack: RasaStack,
) -> None:
    sender, number = customer_with_order(rasa_stack)
    say(rasa_stack, sender, f"where is order {number}", channel="voice")
    [by_sms] = say(rasa_stack, sender, "what's my tracking number", channel="sms")
    [in_chat] = say(rasa_stack, sender, "what's my tracking number", channel="chat")

    assert by_sms["text"] == f"Order {number} UPS tracking 1Z999AA10123456784: {LINK}"
    assert in_chat["text"] == (
        f"The **UPS** tracking number for order {number} is `1Z999AA10123456784`."
    )
    assert in_chat["buttons"] == [{"title": "Track package", "payload": LINK}]


def test_order_not_shipped_yet_has_no_tracking(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="40213")
    [message] = say(
        rasa_stack, sender, f"tracking number for order {number} please", channel="voice"
    )

    assert message["text"] == (
        f"Order {number} hasn't shipped yet, so there's no tracking number. It should arrive on "
        "Monday, November 30th."
    )


def test_voice_hand_off_transfers_to_the_configured_number(rasa_stack: RasaStack) -> None:
    """With HANDOFF_PHONE_NUMBER, a warm transfer whose summary covers the other channels."""
    sender, _ = customer_conversation(rasa_stack)
    say(rasa_stack, sender, "what's your refund policy", channel="sms")
    messages = say(rasa_stack, sender, "I want to talk to a human", channel="voice")

    # Rasa's REST channel hands the text and the custom payload over as two messages.
    assert [m.get("text") for m in messages if m.get("text")] == [
        "I'll put you through to a member of our support team now, and I'll tell them what "
        "we've talked about."
    ]
    [control] = [m["custom"] for m in messages if m.get("custom")]
    assert control["call_control"] == "transfer" and control["destination"] == "+14155550100"
    plan = control["transfer_plan"]
    assert plan["mode"] == "warm-transfer-wait-for-operator-to-speak-first-and-then-say-summary"
    system, user = plan["summaryPlan"]["messages"]
    assert "- by SMS: what's your refund policy" in system["content"]
    assert "{{transcript}}" in user["content"]


def test_a_hand_off_nobody_could_answer_promises_nothing(rasa_stack: RasaStack) -> None:
    """A visitor with no phone and no chat identity: a person would have no way to reply."""
    sender = new_conversation()
    messages = say(rasa_stack, sender, "I want to talk to a human", channel="chat")

    assert [m.get("text") for m in messages] == [
        "I can't pass you to a person from here, because they would have no way to reply to "
        "you. Text us from your phone or use the chat on our website, and ask for a person there."
    ]
    # The bot carries on: it was not paused.
    assert texts(say(rasa_stack, sender, "what's your refund policy", channel="chat"))


def test_a_wrong_number_is_asked_again_for_the_same_request(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="55555")
    say(rasa_stack, sender, "I want a refund", channel="chat")

    wrong = texts(say(rasa_stack, sender, "99999", channel="chat"))
    corrected = texts(say(rasa_stack, sender, number, channel="chat"))

    assert wrong == [NOT_FOUND.format("99999"), ASK_NUMBER]
    # The corrected number answers the refund request, not an order-status question.
    assert corrected == [f"Do you want me to start a refund for order {number} (Wool sweater)?"]
    assert texts(say(rasa_stack, sender, "yes", channel="chat")) == [
        f"I've started a refund request for order {number}. You'll get a return label by email "
        "within the hour. Here's how to pack the item:",
        "",  # Rasa's REST channel sends the picture as a message of its own
        "If it arrived damaged, send a photo of it here and I'll add it to your refund request.",
    ]


def _refunds_started(stack: RasaStack, sender: str) -> list:
    return [
        e
        for e in tracker(stack, sender)["events"]
        if e["event"] == "bot" and "started a refund" in (e.get("text") or "")
    ]


def test_no_refund_starts_without_a_yes(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="55555")

    asked = texts(say(rasa_stack, sender, f"I want to return order {number}", channel="sms"))
    declined = texts(say(rasa_stack, sender, "no", channel="sms"))

    assert asked == [f"Do you want me to start a refund for order {number} (Wool sweater)?"]
    assert declined == ["No problem. Anything else I can help with?"]
    assert _refunds_started(rasa_stack, sender) == []
    assert tracker(rasa_stack, sender)["slots"]["offer"] is None
    # A later yes (to nothing) starts nothing either.
    say(rasa_stack, sender, "yes", channel="sms")
    assert _refunds_started(rasa_stack, sender) == []


def test_a_call_hears_the_refund_question_in_its_spoken_form(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="12345")

    asked = texts(say(rasa_stack, sender, f"I'd like a refund for order {number}", channel="voice"))

    assert len(asked) == 1 and asked[0].startswith("Do you want me to start a refund for order")
    assert "trail running shoes" in asked[0].lower()
    assert _refunds_started(rasa_stack, sender) == []


def test_someone_elses_order_is_not_found_like_a_number_that_does_not_exist(
    rasa_stack: RasaStack,
) -> None:
    sender, _ = customer_conversation(rasa_stack)
    say(rasa_stack, sender, "I want a refund", channel="chat")

    theirs = texts(say(rasa_stack, sender, "55555", channel="chat"))  # the demo customer's
    missing = texts(say(rasa_stack, sender, "99999", channel="chat"))

    assert theirs == [NOT_FOUND.format("55555"), ASK_NUMBER]
    assert missing == [NOT_FOUND.format("99999"), ASK_NUMBER]
    assert tracker(rasa_stack, sender)["slots"]["order_number"] is None
    refunds = [
        e
        for e in tracker(rasa_stack, sender)["events"]
        if e["event"] == "bot" and "refund request" in (e.get("text") or "")
    ]
    assert refunds == []


def test_an_order_owned_by_a_site_user_is_not_told_to_a_phone_without_it(
    rasa_stack: RasaStack,
) -> None:
    sender, phone = customer_conversation(rasa_stack)
    number = seed_order(rasa_stack, user_id="shopper-" + phone[-6:])

    assert texts(say(rasa_stack, sender, f"where is order {number}", channel="sms")) == [
        NOT_FOUND.format(number),
        ASK_NUMBER,
    ]


@pytest.mark.parametrize("number", ["12345", "99999"])
def test_a_conversation_nobody_is_known_in_is_asked_to_sign_in(
    rasa_stack: RasaStack, number: str
) -> None:
    sender = new_conversation()  # as an anonymous web chat visitor's

    reply = texts(say(rasa_stack, sender, f"where is order {number}", channel="chat"))

    # The same answer whether the order exists or not, and no order details.
    assert reply == [SIGN_IN]


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
    sender, number = customer_with_order(rasa_stack)
    say(rasa_stack, sender, "where is my order", channel="voice")
    spoken = " ".join(DIGIT_WORDS[int(digit)] for digit in number)

    [message] = say(rasa_stack, sender, f"it's {spoken}", channel="voice")

    assert message["text"].startswith(f"Order {number}, the trail running shoes, has shipped")


def test_help_outside_sms_names_no_sms_keywords(rasa_stack: RasaStack) -> None:
    [message] = say(rasa_stack, new_conversation(), "what can you do", channel="chat")

    assert "STOP" not in message["text"] and "order" in message["text"]


def test_hold_on_while_asked_for_the_order_number_gives_time(rasa_stack: RasaStack) -> None:
    sender, number = customer_with_order(rasa_stack, like="40213")
    say(rasa_stack, sender, "what's my tracking number", channel="chat")

    waited = texts(say(rasa_stack, sender, "hold on, let me find it", channel="chat"))
    [found] = say(rasa_stack, sender, f"it's {number}", channel="chat")

    assert waited == ["Sure, take your time.", ASK_NUMBER]
    assert found["text"].startswith(f"Order {number} hasn't shipped yet")
