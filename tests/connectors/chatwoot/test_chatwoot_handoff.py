"""The hand-off through Chatwoot, end to end on a real stack against the fake Chatwoot: a
customer asks for a person by SMS → a Chatwoot conversation with the transcript appears → the
agent's public reply in Chatwoot reaches the customer by SMS, once → the customer's web chat
message while held is posted to Chatwoot and the bot does not answer → resolving in Chatwoot
hands back, and the bot answers the next message with the slots it had."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from testkit.fake_chatwoot import Answer
from tests.connectors.chatwoot.conftest import ChatwootStack
from tests.connectors.handoff.test_sms_handoff import QUEUED
from tests.connectors.inbox.helpers import inbox, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import (
    drain,
    fresh_phone,
    open_chat,
    tracker_events,
    user_token,
)
from tests.support import seed_order

# The Chatwoot stack is started once per worker: its modules run together.
pytestmark = [pytest.mark.rasa_server, pytest.mark.xdist_group("chatwoot")]


def chatwoot_contents(world: ChatwootStack, number: int) -> list:
    return [m.content for m in world.chatwoot.messages_of(number)]


async def test_a_hand_off_answered_and_resolved_in_chatwoot(chatwoot_stack: ChatwootStack) -> None:
    world = chatwoot_stack
    stack, chatwoot, twilio = world.stack, world.chatwoot, world.twilio
    phone = fresh_phone()
    number = seed_order(stack, phone=phone)
    text_sms(stack, phone, f"where is my order {number}")
    assert text_sms(stack, phone, "i want to talk to a person") == [QUEUED]
    cid = conversation_of(world.redis, phone)

    # A Chatwoot conversation with the transcript appears.
    [conversation] = wait_for(
        lambda: chatwoot.conversation_of(cid), what="the Chatwoot conversation"
    )
    wanted = "[SMS] i want to talk to a person"
    promise = f"Assistant (SMS): {QUEUED}"
    contents = wait_for(
        lambda: promise in (c := chatwoot_contents(world, conversation.id)) and c,
        what="the transcript",
    )
    assert contents[0].startswith("Hand-off from SMS: the customer asked for a person.")
    assert f"[SMS] where is my order {number}" in contents and wanted in contents
    assert contents[-1] == promise
    assert phone not in "".join(contents)

    # The embedded inbox shows it, read-only: Chatwoot owns the agent side.
    dana = token_for(stack, "Dana")
    me = inbox(stack, "me", dana)
    assert me.json()["owned_by"] == "chatwoot"
    refused = inbox(stack, "claim", dana, {"conversation_id": cid})
    assert refused.status_code == 409 and "chatwoot" in refused.json()["error"]

    # The agent's public reply reaches the customer by SMS, once.
    texted_before = len(twilio.messages_to(phone))
    answer = chatwoot.agent_reply(conversation.id, "Hi, Alex here. Your parcel is on its way.")
    assert (answer.status, answer.body["result"]) == (200, "acted"), answer.body
    [texted] = wait_for(lambda: twilio.messages_to(phone)[texted_before:], what="the agent's SMS")
    assert texted.body == "Alex Agent: Hi, Alex here. Your parcel is on its way."
    assert chatwoot.replay(answer).status == 409, "a replayed delivery is refused"
    # Chatwoot sending the same event twice (another delivery, signed at another second).
    duplicate = chatwoot.deliver(_payload_of(answer), timestamp=int(time.time()) - 2)
    assert duplicate.status == 200, duplicate.body
    held = tracker_events(stack, cid)
    assert [
        e["metadata"]["agent"]["name"] for e in held if (e.get("metadata") or {}).get("agent")
    ] == ["Alex Agent"]
    record = inbox(stack, "conversation", dana, {"conversation_id": cid}).json()["handoff"]
    assert record["state"] == "claimed" and record["agent"]["id"] == "chatwoot:1"

    # A private note stays internal: kept with the hand-off, never sent.
    note = chatwoot.agent_note(conversation.id, "Customer sounds upset; be kind.")
    assert note.body["result"] == "acted"
    notes = inbox(stack, "conversation", dana, {"conversation_id": cid}).json()["notes"]
    assert [n["text"] for n in notes] == ["Customer sounds upset; be kind."]

    # The customer writes in the web chat while held: posted to Chatwoot, not answered.
    token = user_token(stack.env["WEBCHAT_JWT_SECRET"], f"user-{phone[-4:]}", phone=phone)
    chat = await open_chat(stack, token)
    try:
        assert chat.conversation_id == cid
        await chat.say("I'm on the website now, any news?")
        frames = await drain(chat.ws, 3)
        bot_answers = [
            f for f in frames if f["type"] == "message" and f["message"]["role"] == "bot"
        ]
        assert bot_answers == [], "the bot stands aside while a person holds it"
        wait_for(
            lambda: (
                "[Chat] I'm on the website now, any news?"
                in chatwoot_contents(world, conversation.id)
            ),
            what="the chat message in Chatwoot",
        )
        assert len(twilio.messages_to(phone)) == texted_before + 1, "the agent's SMS went once"

        # Resolving in Chatwoot hands back: the customer is told where they last wrote.
        resolved = chatwoot.resolve(conversation.id)
        assert (resolved.status, resolved.body["detail"]) == (200, "handed back")
        back = await chat.next_bot()
        assert back["text"].startswith("You're back with the Acme Shop assistant.")
    finally:
        await chat.ws.close()

    # The bot answers the next message with the order number it had before the hand-off.
    reply = text_sms(stack, phone, "what's the tracking number")
    assert number in " ".join(reply), reply
    closing = wait_for(
        lambda: [
            c for c in chatwoot_contents(world, conversation.id) if c.startswith("Handed back")
        ],
        what="the closing note",
    )
    assert closing == [
        "Handed back to the assistant by Alex Agent. Replies here no longer reach the customer."
    ]
    assert chatwoot.calls("toggle_status") == 0, "resolved in Chatwoot: not resolved again"

    # Each message once in Chatwoot, and none of what came after the hand-back.
    await asyncio.sleep(0.5)
    contents = chatwoot_contents(world, conversation.id)
    assert len(contents) == len(set(contents))
    assert not any("tracking number" in c for c in contents)


def _payload_of(answer: Answer) -> dict:
    return json.loads(answer.payload)


def test_every_key_of_the_chatwoot_stack_expires(chatwoot_stack: ChatwootStack) -> None:
    """Run after the hand-off above: the mirror's, the webhook's and the hand-off's keys."""
    with redis.Redis.from_url(chatwoot_stack.redis.url) as client:
        keys = list(client.scan_iter(count=1000))
        lasting = [key for key in keys if client.pttl(key) == -1]
    assert any(b"chatwoot" in key for key in keys)
    assert lasting == []
