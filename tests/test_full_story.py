"""The whole promise, end to end: one customer, one conversation, across voice, SMS and chat.

Real connectors (VAPI custom-LLM stream, signed Twilio webhooks, the authenticated chat
WebSocket), the trained assistant, the action server and real Redis; only Twilio's API (the
`fake_twilio` server) lies outside the machine.

A caller asks for an order's status, interrupts the refund policy, asks for the tracking link
by text; the SMS arrives; the customer answers by SMS; then opens the web chat, sees the whole
conversation, and continues it without repeating the order number.
"""

from __future__ import annotations

import json

import pytest
import websockets

from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.actions.helpers import (
    chat_token,
    chat_turn,
    chat_url,
    conversation_of,
    frame,
    phone_call,
    send_sms,
    tracker,
)
from tests.support import seed_order

pytestmark = pytest.mark.rasa_server

LINK = "https://track.acme-shop.example/1Z999AA10123456784"


async def test_call_then_sms_then_chat_is_one_conversation(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    call = phone_call(rasa_stack)
    phone = call.number
    order = seed_order(rasa_stack, phone=phone)

    # 1. The call: order status by number, then the refund policy, cut off by the caller.
    asked = await call.say("where is my order")
    assert "order number" in asked.text
    status = await call.say(f"it's {order}")
    assert "has shipped with UPS" in status.text and "Thursday, November 26th" in status.text
    policy = await call.say("what's your refund policy", interrupt_after=60)
    assert len(call.history[-1]["content"]) <= 60 < len(policy.text)
    texted = await call.say("text me the tracking link")
    assert texted.text == "Done, I've texted you the tracking link."
    assert "refund" not in texted.text.lower()  # the cut-off policy is not repeated

    # 2. The SMS arrives on the caller's phone.
    [sms] = fake_twilio.wait_for_messages(phone, 1)
    assert LINK in sms.body

    # 3. The customer replies by SMS: same conversation, the order is known.
    conversation = await conversation_of(rasa_stack, phone)
    reply = await send_sms(rasa_stack, phone, "when will my order arrive?")
    assert " ".join(reply) == (
        f"Order {order} (Trail running shoes): shipped via UPS, arriving Thu Nov 26. Track: {LINK}"
    )

    # 4. The web chat, signed in with the same (verified) phone, shows the whole conversation.
    async with websockets.connect(chat_url(rasa_stack)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": chat_token(rasa_stack, phone)}))
        ready = await frame(ws)
        assert ready["type"] == "ready" and ready["conversation_id"] == conversation
        history = await frame(ws)
        assert history["type"] == "history"
        shown = [(m["role"], m["channel"], m["text"]) for m in history["messages"]]
        users = [(channel, text) for role, channel, text in shown if role == "user"]
        assert users == [
            ("voice", "where is my order"),
            ("voice", f"it's {order}"),
            ("voice", "what's your refund policy"),
            ("voice", "text me the tracking link"),
            ("sms", "when will my order arrive?"),
        ]
        assert ("bot", "sms", sms.body) in shown  # the text sent during the call
        assert any(
            role == "bot" and channel == "voice" and "refund policy" in text
            for role, channel, text in shown
        )
        assert shown[-1][1] == "sms" and LINK in shown[-1][2]

        # 5. ... and continues it: the cut-off policy is offered, the order is not asked again.
        greeting = await chat_turn(ws, "hi")
        assert greeting[-1]["text"] == (
            "By the way, our call was cut off during the refund policy. Would you like to see "
            "the rest here?"
        )
        rest = await chat_turn(ws, "yes")
        assert rest[0]["text"].startswith("Here's the rest of the refund policy: You can return")
        refund = await chat_turn(ws, "I'd like to return my order")
        assert [m["text"] for m in refund] == [
            f"Do you want me to start a refund for order {order} (Trail running shoes)?"
        ]
        started = await chat_turn(ws, "yes")
        assert [m["text"] for m in started] == [
            f"I've started a refund request for order {order}. You'll get a return label by email "
            "within the hour. Here's how to pack the item:",
            "If it arrived damaged, send a photo of it here and I'll add it to your refund "
            "request.",
        ]

    state = tracker(rasa_stack, conversation)
    assert state["slots"]["channel"] == "chat"
    assert state["slots"]["order_number"] == order
    asked_for_number = [
        e
        for e in state["events"]
        if e["event"] == "bot"
        and (e.get("metadata") or {}).get("utter_action") == "utter_ask_order_number"
    ]
    assert len(asked_for_number) == 1  # once, on the call, never again
