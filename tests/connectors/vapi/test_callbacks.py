"""Callbacks by phone, end to end on the shared stack: asked for in the chat or by SMS, placed
through the fake VAPI API at the chosen time, continued on the call in the same conversation,
moved, cancelled, and a call nobody answered told by SMS.

The stack's own outbound queue polls with the real clock; these tests book callbacks for
tomorrow and place them with a second queue, the same code, in this process, whose clock they
move (no sleeps), against the stack's Redis and the fake VAPI API.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any, Dict, List

import httpx
import pytest

from connectors.vapi.callbacks import CallbackCourier
from omnichannel import metrics
from omnichannel.callbacks.items import ANSWERED_FIELD, call_fields, callbacks_of
from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import CANCELLED, FAILED, SCHEDULED, SENT, OutboundQueue
from omnichannel.outbound.policy import CALLBACK, OutboundPolicy
from omnichannel.settings import Settings
from testkit.fake_twilio import FakeTwilio
from testkit.fake_vapi import FakeVapi
from testkit.stack import RasaStack
from tests.connectors.vapi.helpers import conversation_of_stack, tracker_of
from tests.connectors.webchat.helpers import fresh_phone, open_chat, user_token
from tests.support import post_sms, seed_order

pytestmark = pytest.mark.rasa_server


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stack(rasa_stack: RasaStack, monkeypatch: pytest.MonkeyPatch) -> RasaStack:
    # The queue and courier of this process work on the stack's Redis.
    monkeypatch.setenv("REDIS_URL", rasa_stack.env["REDIS_URL"])
    return rasa_stack


@pytest.fixture
def placing(stack: RasaStack) -> tuple[OutboundQueue, Clock]:
    """A replica's outbound queue with the callback courier, on a clock the test moves."""
    clock = Clock()
    settings = Settings.from_env(stack.env)
    gate = OutboundGate(OutboundPolicy.from_env({}), clock=clock)
    queue = OutboundQueue(settings.redis_url, gate)
    queue.register(CALLBACK, CallbackCourier(settings, clock=clock))
    return queue, clock


async def callbacks(stack: RasaStack, conversation_id: str) -> List[Any]:
    queue = OutboundQueue(stack.env["REDIS_URL"], OutboundGate(OutboundPolicy.from_env({})))
    return await callbacks_of(queue.store, conversation_id)


async def viewer_callbacks(stack: RasaStack, conversation_id: str) -> List[Dict[str, Any]]:
    """The callbacks the conversation viewer lists for the conversation."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            stack.base_url + "/webhooks/viewer/api/timeline",
            json={"conversation_id": conversation_id},
            headers={"Authorization": f"Bearer {stack.env['RASA_AUTH_TOKEN']}"},
        )
    answer.raise_for_status()
    return [item for item in answer.json()["outbound"] if item["kind"] == "callback"]


def calls_to(fake: FakeVapi, number: str) -> List[Dict[str, Any]]:
    return [c for c in fake.calls if c["customer"]["number"] == number]


async def test_a_callback_asked_for_in_the_chat_is_placed_at_its_time_and_continues_the_chat(
    stack: RasaStack, fake_vapi: FakeVapi, placing: tuple[OutboundQueue, Clock]
) -> None:
    queue, clock = placing
    phone = fresh_phone()
    order = seed_order(stack, phone=phone)
    token = user_token(stack.env["WEBCHAT_JWT_SECRET"], f"cb-{secrets.token_hex(6)}", phone=phone)
    chat = await open_chat(stack, token)
    try:
        await chat.say(f"where is my order {order}?")
        await chat.next_bot()
        await chat.turn_done()
        await chat.say("call me back tomorrow at 3pm")
        answer = await chat.next_bot()
        await chat.turn_done()
    finally:
        await chat.ws.close()
    assert "tomorrow at 15:00" in answer["text"], answer
    conversation_id = chat.conversation_id
    [item] = await callbacks(stack, conversation_id)
    assert item.status == SCHEDULED and item.source == "customer"
    assert order in item.payload["opening"]
    [shown] = await viewer_callbacks(stack, conversation_id)
    assert shown["status"] == "scheduled" and shown["response"] == f"call back about order {order}"
    assert shown["call"] is None and shown["due"] == item.due

    placed_before = metrics.CALLBACKS.labels(outcome="placed")._value.get()
    clock.now = item.due - 1
    await queue.poll_once()
    assert calls_to(fake_vapi, phone) == [], "not before its time"
    clock.now = item.due
    await queue.poll_once()
    [call] = calls_to(fake_vapi, phone)
    assert metrics.CALLBACKS.labels(outcome="placed")._value.get() == placed_before + 1
    # Spoken digit by digit (the voice renderer's way with order numbers).
    assert f"You asked us to call about order {' '.join(order)}." in FakeVapi.first_message(call)
    metadata = call["assistantOverrides"]["metadata"]
    assert metadata == {"conversation_id": conversation_id, "callback_id": item.item_id}
    assert "assistant" in call and call["assistant"]["model"]["provider"] == "custom-llm"
    [item] = await callbacks(stack, conversation_id)
    assert item.status == SENT and item.outcome["call_id"] == call["id"]
    # A second poll (or a restart) finds nothing due: one call.
    clock.now = item.due + 3600
    await queue.poll_once()
    assert len(calls_to(fake_vapi, phone)) == 1

    # The callee picks up: the call's turns are the chat's conversation.
    callee = fake_vapi.answer(
        call, stack.base_url, stack.env["VAPI_SERVER_SECRET"], stack.env["VAPI_CUSTOM_LLM_KEY"]
    )
    try:
        answered = await callee.event({"type": "status-update", "status": "in-progress"})
        assert answered.status_code == 200, answered.text
        reply = await callee.say("what's the status of my order?")
    finally:
        await callee.aclose()
    assert reply.text, reply
    tracker = await tracker_of(stack, conversation_id)
    voice_turns = [
        e
        for e in tracker.events
        if getattr(e, "text", None) == "what's the status of my order?"
        and (e.metadata or {}).get("call_id") == call["id"]
    ]
    assert voice_turns, "the call's turn is in the chat's conversation"
    assert tracker.get_slot("order_number") == order
    assert (await call_fields(queue.store, item))[ANSWERED_FIELD] == "1"
    [shown] = await viewer_callbacks(stack, conversation_id)
    assert (shown["status"], shown["call"], shown["call_id"]) == ("sent", "answered", call["id"])


async def test_move_and_cancel_a_callback(
    stack: RasaStack, fake_vapi: FakeVapi, placing: tuple[OutboundQueue, Clock]
) -> None:
    queue, clock = placing
    phone = fresh_phone()
    token = user_token(stack.env["WEBCHAT_JWT_SECRET"], f"mv-{secrets.token_hex(6)}", phone=phone)
    chat = await open_chat(stack, token)
    try:
        replies = []
        for text in ("call me back tomorrow at 3pm", "move my callback to 4pm"):
            await chat.say(text)
            replies.append((await chat.next_bot())["text"])
            await chat.turn_done()
        [item] = await callbacks(stack, chat.conversation_id)
        assert item.status == SCHEDULED
        assert "tomorrow at 16:00" in replies[1], replies
        first_due = item.due
        await chat.say("cancel my callback")
        cancelled = (await chat.next_bot())["text"]
        await chat.turn_done()
        await chat.say("cancel my callback")
        nothing = (await chat.next_bot())["text"]
        await chat.turn_done()
    finally:
        await chat.ws.close()
    assert "cancelled" in cancelled
    assert "don't have a callback" in nothing
    [item] = await callbacks(stack, chat.conversation_id)
    assert item.status == CANCELLED and item.due == first_due
    clock.now = first_due + 60
    await queue.poll_once()
    assert calls_to(fake_vapi, phone) == [], "a cancelled callback is never dialled"


async def test_a_call_nobody_answers_is_told_by_sms(
    stack: RasaStack,
    fake_vapi: FakeVapi,
    fake_twilio: FakeTwilio,
    placing: tuple[OutboundQueue, Clock],
) -> None:
    queue, clock = placing
    phone = fresh_phone()
    reply = await post_sms(stack, phone, "please call me back tomorrow at 10am")
    assert reply.status_code == 200
    conversation_id = await conversation_of_stack(stack, phone)
    assert conversation_id
    [item] = await callbacks(stack, conversation_id)
    clock.now = item.due
    await queue.poll_once()
    [call] = calls_to(fake_vapi, phone)
    callee = fake_vapi.answer(
        call, stack.base_url, stack.env["VAPI_SERVER_SECRET"], stack.env["VAPI_CUSTOM_LLM_KEY"]
    )
    sent_before = len(fake_twilio.messages_to(phone))
    try:
        for message in (
            {"type": "status-update", "status": "ended", "endedReason": "customer-did-not-answer"},
            {"type": "end-of-call-report", "endedReason": "customer-did-not-answer"},
        ):
            answer = await callee.event(message)
            assert answer.status_code == 200, answer.text
    finally:
        await callee.aclose()
    [item] = await callbacks(stack, conversation_id)
    assert item.status == FAILED and item.reason == "customer-did-not-answer"
    [shown] = await viewer_callbacks(stack, conversation_id)
    assert (shown["status"], shown["reason"], shown["call_id"]) == (
        "failed",
        "customer-did-not-answer",
        call["id"],
    )
    await asyncio.to_thread(fake_twilio.wait_for_messages, phone, sent_before + 1)
    texts = [m.body for m in fake_twilio.messages_to(phone)[sent_before:]]
    assert len(texts) == 1 and "couldn't reach you" in texts[0], texts
    async with httpx.AsyncClient(timeout=10) as client:
        scraped = await client.get(f"http://127.0.0.1:{stack.env['METRICS_PORT']}/metrics")
    metrics_text = scraped.text
    assert re.search(r'omnichannel_callbacks_total\{outcome="not_answered"\} [1-9]', metrics_text)
    assert re.search(r'omnichannel_callbacks_total\{outcome="reported"\} [1-9]', metrics_text)


async def test_no_one_can_have_another_number_called(stack: RasaStack, fake_vapi: FakeVapi) -> None:
    """A site user whose phone claim is not verified, and a number typed in the message, get
    no callback: calls only go to the conversation's own, verified number."""
    someone_else = fresh_phone()
    token = user_token(
        stack.env["WEBCHAT_JWT_SECRET"],
        f"nv-{secrets.token_hex(6)}",
        phone=someone_else,
        verified=False,
    )
    chat = await open_chat(stack, token)
    try:
        await chat.say(f"call me back now on {someone_else}")
        answer = (await chat.next_bot())["text"]
        await chat.turn_done()
    finally:
        await chat.ws.close()
    assert "I can only call the number you've contacted us from" in answer, answer
    assert await callbacks(stack, chat.conversation_id) == []
    assert calls_to(fake_vapi, someone_else) == []
