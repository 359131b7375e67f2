"""The assembled assistant: a really trained model served by `rasa run` with the project's
endpoints (Redis stores, action server), over Rasa's REST channel."""

from __future__ import annotations

import secrets

import httpx
import pytest

from testkit.fake_llm import DEFAULT_ANSWER, FakeLlm
from testkit.stack import RasaStack
from tests.actions.helpers import customer_with_order

pytestmark = pytest.mark.rasa_server


def say(stack: RasaStack, sender: str, text: str, channel: str = "chat") -> list:
    response = httpx.post(
        f"{stack.base_url}/webhooks/rest/webhook",
        json={"sender": sender, "message": text, "metadata": {"channel": channel}},
        timeout=30,
    )
    response.raise_for_status()
    return [message.get("text", "") for message in response.json()]


def tracker(stack: RasaStack, sender: str) -> dict:
    response = httpx.get(
        f"{stack.base_url}/conversations/{sender}/tracker",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def test_conversation_survives_a_server_restart(rasa_stack: RasaStack) -> None:
    sender, order = customer_with_order(rasa_stack)
    assert "order number" in say(rasa_stack, sender, "where is my order")[0]
    assert "has shipped with UPS" in say(rasa_stack, sender, f"it's {order}")[0]
    before = tracker(rasa_stack, sender)
    assert before["slots"]["order_number"] == order

    rasa_stack.restart_rasa()

    after = tracker(rasa_stack, sender)
    assert after["slots"]["order_number"] == order
    assert after["slots"]["channel"] == "chat"
    user_texts = [e["text"] for e in after["events"] if e["event"] == "user"]
    assert user_texts == ["where is my order", f"it's {order}"]
    # The order number came back from Redis: the tracking number is not asked for again.
    reply = say(rasa_stack, sender, "what's the tracking number", channel="sms")
    assert "1Z999AA10123456784" in reply[0]
    assert tracker(rasa_stack, sender)["slots"]["channel"] == "sms"


def test_channel_slot_follows_the_latest_message(rasa_stack: RasaStack) -> None:
    sender = "c_" + secrets.token_urlsafe(8)
    say(rasa_stack, sender, "hello", channel="voice")
    assert tracker(rasa_stack, sender)["slots"]["channel"] == "voice"
    say(rasa_stack, sender, "what's your refund policy", channel="sms")
    assert tracker(rasa_stack, sender)["slots"]["channel"] == "sms"


def test_low_confidence_goes_to_the_fallback(rasa_stack: RasaStack, fake_llm: FakeLlm) -> None:
    """The LLM fallback answers (the stack's LLM is the local fake; tests/actions has more)."""
    fake_llm.reset()
    sender = "c_" + secrets.token_urlsafe(8)
    reply = say(rasa_stack, sender, "zxqv blorft wibble")
    assert reply == [DEFAULT_ANSWER]
    intents = [
        e["parse_data"]["intent"]["name"]
        for e in tracker(rasa_stack, sender)["events"]
        if e["event"] == "user"
    ]
    assert intents == ["nlu_fallback"]
