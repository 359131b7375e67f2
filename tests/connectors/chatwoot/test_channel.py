"""The Chatwoot webhook on the real stack: what is refused without side effects (a bad or old
signature, a replay, a missing or wrong secret URL, a conversation never handed off, bodies too
large or not JSON), and what agents do that is carried out (assignment, a takeover by
answering, resolving to pending, a reply after the hand-back noted for the agent, our own
posts' echoes ignored)."""

from __future__ import annotations

import secrets
import time
from typing import List, Tuple

import httpx
import pytest
import redis

from connectors.chatwoot.state import ChatwootState
from testkit.fake_chatwoot import Answer, sign
from tests.connectors.chatwoot.conftest import ChatwootStack
from tests.connectors.inbox.helpers import inbox, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone, tracker_events

# The Chatwoot stack is started once per worker: its modules run together.
pytestmark = [pytest.mark.rasa_server, pytest.mark.xdist_group("chatwoot")]


def handed_off(world: ChatwootStack) -> Tuple[str, str, int]:
    """A fresh customer handed off by SMS: (phone, conversation id, Chatwoot conversation)."""
    phone = fresh_phone()
    text_sms(world.stack, phone, "i want to talk to a person")
    cid = conversation_of(world.redis, phone)
    [conversation] = wait_for(lambda: world.chatwoot.conversation_of(cid), what="the mirror")
    wait_for(lambda: len(world.chatwoot.messages_of(conversation.id)) >= 3, what="the transcript")
    return phone, cid, conversation.id


def agent_reply_payload(world: ChatwootStack, conversation: int, text: str) -> dict:
    """The ``message_created`` Chatwoot sends for an agent's reply (not recorded in the fake)."""
    chatwoot = world.chatwoot
    with chatwoot.lock:
        data = chatwoot._conversation_data(chatwoot.conversations[conversation])
    return {
        "event": "message_created",
        "id": 10_000 + conversation,
        "content": text,
        "message_type": "outgoing",
        "private": False,
        "source_id": None,
        "sender": chatwoot.agents[1].webhook_data(),
        "inbox": {"id": chatwoot.inbox_id, "name": "Assistant hand-offs"},
        "conversation": data,
        "account": {"id": chatwoot.account_id, "name": "Acme Shop"},
    }


def taken(world: ChatwootStack, answer: Answer) -> bool:
    """Whether the webhook remembered ``answer``'s delivery (its id or signature) as taken."""
    headers = {name.lower(): value for name, value in answer.headers.items()}
    keys = ChatwootState._delivery_keys(
        headers.get("x-chatwoot-delivery"), headers.get("x-chatwoot-signature", "")[7:] or None
    )
    with redis.Redis.from_url(world.redis.url) as client:
        return any(client.exists(key) for key in keys)


def snapshot(world: ChatwootStack, phone: str, cid: str) -> dict:
    return {
        "sms": len(world.twilio.messages_to(phone)),
        "events": len(tracker_events(world.stack, cid)),
    }


def assert_nothing_happened(world: ChatwootStack, phone: str, cid: str, before: dict) -> None:
    time.sleep(0.5)
    assert snapshot(world, phone, cid) == before


def test_forged_old_unsigned_and_misaddressed_webhooks_change_nothing(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    payload = agent_reply_payload(world, conversation, "Send me your card number")
    before = snapshot(world, phone, cid)
    chatwoot = world.chatwoot
    refusals: List[Answer] = [
        chatwoot.deliver(payload, secret=secrets.token_urlsafe(24)),
        chatwoot.deliver(payload, timestamp=int(time.time()) - 600),
        chatwoot.deliver(payload, url=world.webhook_url[:-1] + "x"),
        chatwoot.deliver(payload, url=f"{world.stack.base_url}/webhooks/chatwoot/webhook"),
    ]
    chatwoot.signing = False
    try:
        refusals.append(chatwoot.deliver(payload))
    finally:
        chatwoot.signing = True
    assert [(a.status, a.body["error"]) for a in refusals] == [
        (401, "bad signature"),
        (401, "signed more than 300 s ago"),
        (401, "wrong webhook URL secret"),
        (401, "this webhook is served at its secret URL only"),
        (401, "unsigned request (X-Chatwoot-Signature, X-Chatwoot-Timestamp)"),
    ]
    assert_nothing_happened(world, phone, cid, before)
    assert not any(taken(world, answer) for answer in refusals)
    secret = world.url_secret
    rasa_log = world.stack.rasa_log()
    assert secret not in rasa_log and "card number" not in rasa_log


def test_a_replay_is_refused_and_sends_nothing_again(chatwoot_stack: ChatwootStack) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    sent = len(world.twilio.messages_to(phone))
    first = world.chatwoot.deliver(agent_reply_payload(world, conversation, "One moment please."))
    assert first.status == 200, first.body
    wait_for(lambda: world.twilio.messages_to(phone)[sent:], what="the agent's SMS")
    before = snapshot(world, phone, cid)
    replay = world.chatwoot.replay(first)
    assert (replay.status, replay.body["error"]) == (409, "this delivery was taken already")
    assert_nothing_happened(world, phone, cid, before)


def test_a_conversation_never_handed_off_is_refused_without_side_effects(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    payload = agent_reply_payload(world, conversation, "Hello")
    payload["conversation"] = {**payload["conversation"], "id": 987654}
    before = snapshot(world, phone, cid)
    answer = world.chatwoot.deliver(payload)
    assert answer.status == 404 and answer.body["result"] == "unknown"
    assert_nothing_happened(world, phone, cid, before)
    assert not taken(world, answer), "a refusal is not remembered as a delivery taken"


def test_bodies_unsigned_too_large_too_deep_or_not_json_are_refused(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    huge = b"{" + b" " * 1_000_001 + b"}"
    unsigned = httpx.post(world.webhook_url, content=huge, timeout=30)
    assert (unsigned.status_code, unsigned.json()["error"]) == (
        401,
        "unsigned request (X-Chatwoot-Signature, X-Chatwoot-Timestamp)",
    ), "refused on its head, before the body is read"
    signed_head = dict(world.chatwoot.request_for({}, url=world.webhook_url).header_items())
    too_large = httpx.post(world.webhook_url, content=huge, headers=signed_head, timeout=30)
    assert too_large.status_code == 413
    too_deep = b"[" * 100 + b"]" * 100
    deep = world.chatwoot.request_for({}, url=world.webhook_url)
    deep.data = too_deep
    stamp = deep.get_header("X-chatwoot-timestamp")
    deep.add_header("X-Chatwoot-Signature", sign(world.chatwoot.webhook_secret, stamp, too_deep))
    assert world.chatwoot.send(deep).status == 400
    garbage = world.chatwoot.send(
        world.chatwoot.request_for({"event": "x"}, url=world.webhook_url), "garbage"
    )
    assert garbage.status == 200 and garbage.body["result"] == "ignored"
    request = world.chatwoot.request_for({}, url=world.webhook_url)
    request.data = b"not json"
    stamp = request.get_header("X-chatwoot-timestamp")
    request.add_header(
        "X-Chatwoot-Signature", sign(world.chatwoot.webhook_secret, stamp, b"not json")
    )
    assert world.chatwoot.send(request).status == 400


def test_other_inboxes_and_our_own_posts_are_ignored(chatwoot_stack: ChatwootStack) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    other = agent_reply_payload(world, conversation, "Not for you")
    other["inbox"] = {"id": 999, "name": "Email"}
    answer = world.chatwoot.deliver(other)
    assert (answer.status, answer.body["detail"]) == (200, "another inbox")
    echoes = [
        a
        for a in world.chatwoot.answers
        if a.event == "message_created" and a.body and "result" in a.body
    ]
    ours = [a for a in echoes if a.body["detail"] == "our own message"]
    assert ours, "Chatwoot's webhooks for our own posts come back, and are ignored"
    assert all(a.status == 200 for a in ours)


def test_assignment_claims_and_an_answer_by_another_agent_takes_over(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    chatwoot = world.chatwoot
    assigned = chatwoot.assign(conversation, agent_id=2)
    assert (assigned.status, assigned.body["detail"]) == (200, "claimed")
    events = tracker_events(world.stack, cid)
    again = chatwoot.assign(conversation, agent_id=2)
    assert again.body["detail"] == "already held by that agent"
    sent = len(world.twilio.messages_to(phone))
    answer = chatwoot.agent_reply(conversation, "Alex here, I'll take this one.", agent_id=1)
    assert answer.body["result"] == "acted"
    [texted] = wait_for(lambda: world.twilio.messages_to(phone)[sent:], what="the SMS")
    assert texted.body.startswith("Alex Agent: ")
    record = inbox(world.stack, "conversation", token_for(world.stack), {"conversation_id": cid})
    history = record.json()["handoff"]["history"]
    steps = [(step["state"], step["by"]["id"], step.get("detail", "")) for step in history]
    assert steps[1:] == [
        ("claimed", "chatwoot:2", ""),
        ("claimed", "chatwoot:1", "taken over from Sam Senior"),
    ]
    assert len(tracker_events(world.stack, cid)) > len(events)


def test_pending_in_chatwoot_gives_the_conversation_back(chatwoot_stack: ChatwootStack) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    sent = len(world.twilio.messages_to(phone))
    answer = world.chatwoot.resolve(conversation, status="pending")
    assert (answer.status, answer.body["detail"]) == (200, "handed back")
    back = wait_for(lambda: world.twilio.messages_to(phone)[sent:], what="the hand-back SMS")
    assert back[0].body.startswith("You're back with the Acme Shop assistant.")


def test_a_reply_after_the_hand_back_is_not_sent_and_the_agent_is_told(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    phone, cid, conversation = handed_off(world)
    sent = len(world.twilio.messages_to(phone))
    assert world.chatwoot.resolve(conversation).status == 200
    wait_for(lambda: world.twilio.messages_to(phone)[sent:], what="the hand-back SMS")
    sent = len(world.twilio.messages_to(phone))
    late = world.chatwoot.agent_reply(conversation, "Oh, one more thing!")
    assert late.status == 200 and late.body["result"] == "not_sent"
    note = wait_for(
        lambda: [
            m
            for m in world.chatwoot.messages_of(conversation)
            if m.private and m.content.startswith("Not sent to the customer")
        ],
        what="the note for the agent",
    )
    assert "back with the assistant" in note[0].content
    time.sleep(0.5)
    assert len(world.twilio.messages_to(phone)) == sent
