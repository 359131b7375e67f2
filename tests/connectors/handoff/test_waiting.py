"""Waiting for a person, on the real stack: what the customer's messages do while a request is
queued or claimed, the waiting notice and the give-up (the stack's own sweeper, with deadlines
moved into the past), and the hand-off record deciding over a tracker left paused."""

from __future__ import annotations

import json
import time

import pytest
import redis

from omnichannel.handoff.store import HandoffStore
from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone, tracker_events

pytestmark = pytest.mark.rasa_server

QUEUED_SMS = "I've passed this to our support team."
STILL_QUEUED = "You're still in the queue for a person. Reply NEVER MIND if you no longer need one."


def handed_off(stack: RasaStack, stack_redis) -> tuple:
    phone = fresh_phone()
    [answer] = text_sms(stack, phone, "i want to talk to a person")
    assert answer.startswith(QUEUED_SMS)
    return phone, conversation_of(stack_redis, phone)


def record(stack_redis, cid: str) -> dict:
    with redis.Redis.from_url(stack_redis.url) as client:
        raw = client.hget(HandoffStore.record_key(cid), "record")
    return json.loads(raw) if raw else {}


def test_never_mind_while_queued_brings_the_bot_back(rasa_stack: RasaStack, stack_redis) -> None:
    phone, cid = handed_off(rasa_stack, stack_redis)
    assert text_sms(rasa_stack, phone, "never mind") == [
        "OK, I've cancelled your request for a person. What can I do for you?"
    ]
    stored = record(stack_redis, cid)
    assert stored["state"] == "abandoned" and stored["closed_by"]["kind"] == "customer"
    assert text_sms(rasa_stack, phone, "what's your refund policy")[0].startswith(
        "Here's our refund policy."
    )


def test_a_question_the_bot_knows_is_answered_and_the_request_keeps_its_place(
    rasa_stack: RasaStack, stack_redis
) -> None:
    phone, cid = handed_off(rasa_stack, stack_redis)
    [policy] = text_sms(rasa_stack, phone, "what's your refund policy")
    assert policy.startswith("Here's our refund policy.") and policy.endswith(STILL_QUEUED)
    assert record(stack_redis, cid)["state"] == "queued"
    # Still standing aside for anything else.
    assert text_sms(rasa_stack, phone, "hello? anyone?") == []


def test_once_claimed_everything_waits_for_the_agent(rasa_stack: RasaStack, stack_redis) -> None:
    phone, cid = handed_off(rasa_stack, stack_redis)
    dana = token_for(rasa_stack, "Dana")
    assert inbox(rasa_stack, "claim", dana, {"conversation_id": cid}).status_code == 200
    assert text_sms(rasa_stack, phone, "never mind") == []
    assert text_sms(rasa_stack, phone, "what's your refund policy") == []
    assert record(stack_redis, cid)["state"] == "claimed"
    users = [e["text"] for e in tracker_events(rasa_stack, cid) if e["event"] == "user"]
    assert users[-2:] == ["never mind", "what's your refund policy"]


def test_nobody_claiming_means_a_notice_then_a_give_up(
    rasa_stack: RasaStack, stack_redis, fake_twilio: FakeTwilio
) -> None:
    phone, cid = handed_off(rasa_stack, stack_redis)
    store_key = HandoffStore.record_key(cid)
    sent = len(fake_twilio.messages_to(phone))

    def move_deadlines(**deadlines: float) -> None:
        with redis.Redis.from_url(stack_redis.url) as client:
            stored = json.loads(client.hget(store_key, "record"))
            stored.update(deadlines)
            client.hset(store_key, "record", json.dumps(stored))
            due = min(v for k, v in stored.items() if k in ("notice_at", "give_up_at"))
            client.zadd(HandoffStore.index_key("due"), {cid: int(due * 1000)})

    move_deadlines(notice_at=time.time() - 1)
    [notice] = wait_for(lambda: fake_twilio.messages_to(phone)[sent:], what="the waiting notice")
    assert notice.body.startswith("Sorry for the wait: nobody from our team has picked up")
    assert record(stack_redis, cid)["notice_sent"] is True

    move_deadlines(give_up_at=time.time() - 1)
    given_up = wait_for(lambda: fake_twilio.messages_to(phone)[sent + 1 :], what="the give-up")
    assert given_up[0].body.startswith("Sorry, our team couldn't get to your request in time")
    stored = record(stack_redis, cid)
    assert stored["state"] == "abandoned" and stored["closed_by"]["id"] == "timeout"
    assert any(
        e["event"] == "resume" and e["metadata"]["handoff"]["event"] == "given_up"
        for e in tracker_events(rasa_stack, cid)
    )
    assert text_sms(rasa_stack, phone, "what's your refund policy")[0].startswith("Here's our")
    assert len(fake_twilio.messages_to(phone)) == sent + 2, "one notice, one give-up"


def test_the_record_decides_over_a_tracker_left_paused(rasa_stack: RasaStack, stack_redis) -> None:
    """A hand-off that closed (or expired) while the bot could not be resumed: the customer's
    next message resumes it and is answered."""
    phone, cid = handed_off(rasa_stack, stack_redis)
    with redis.Redis.from_url(stack_redis.url) as client:
        client.delete(HandoffStore.record_key(cid))
    assert text_sms(rasa_stack, phone, "what's your refund policy")[0].startswith("Here's our")
    assert any(
        e["event"] == "resume" and e["metadata"]["handoff"]["event"] == "repaired"
        for e in tracker_events(rasa_stack, cid)
    )
