"""Agents' replies as durable work, on the real stack: a reply a dead replica had recorded (its
lease run out) is finished by the stack's sweeper, logged once and texted once, even when the
dead replica had already logged it or had already put the SMS in the outbox."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import redis
from rasa.shared.core.events import BotUttered

from connectors.handoff.messages import HANDOFF_MESSAGE, MESSAGE_ID, outbox_id
from omnichannel.redis_client import conversation_key, global_key
from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import append_events, fresh_phone, tracker_events

pytestmark = pytest.mark.rasa_server

DEAD = "dead-host/1/abcdef01"


def left_by_a_dead_replica(
    stack_redis, cid: str, message_id: str, text: str, log_from: int
) -> None:
    """A ``handoff_message`` item as a replica that died mid-delivery leaves it."""
    event = BotUttered(
        text,
        metadata={
            "agent": {"id": "agent-x", "name": "Dana"},
            MESSAGE_ID: message_id,
            "channel": "sms",
        },
    )
    payload = {
        "channel": "sms",
        "event": event.as_dict(),
        "log_from": log_from,
        "since": time.time(),
    }
    key = conversation_key(cid, "work", HANDOFF_MESSAGE, message_id)
    with redis.Redis.from_url(stack_redis.url) as client:
        client.hset(
            key,
            mapping={
                "state": "running",
                "owner": DEAD,
                "lease_until": 0,
                "attempt": 1,
                "payload": json.dumps(payload),
                "created": int(time.time() * 1000),
            },
        )
        client.expire(key, 3600)
        client.zadd(global_key("work", HANDOFF_MESSAGE), {json.dumps([cid, message_id]): 0})
    return event


@pytest.mark.parametrize(
    "logged_already", [False, True], ids=["died-before-logging", "died-after-logging"]
)
def test_a_reply_left_by_a_dead_replica_is_sent_once(
    rasa_stack: RasaStack, stack_redis, fake_twilio: FakeTwilio, logged_already: bool
) -> None:
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "i want to talk to a person")
    cid = conversation_of(stack_redis, phone)
    assert (
        inbox(rasa_stack, "claim", token_for(rasa_stack), {"conversation_id": cid}).status_code
        == 200
    )
    log_from = len(tracker_events(rasa_stack, cid))
    message_id = secrets.token_hex(8)
    text = f"Your replacement ships today ({message_id[:4]})."
    sent = len(fake_twilio.messages_to(phone))
    event = left_by_a_dead_replica(stack_redis, cid, message_id, text, log_from)
    if logged_already:
        append_events(rasa_stack, cid, [event.as_dict()])

    [texted] = wait_for(lambda: fake_twilio.messages_to(phone)[sent:], what="the taken-over SMS")
    assert texted.body == f"Dana: {text}"
    with redis.Redis.from_url(stack_redis.url) as client:
        item = client.hgetall(conversation_key(cid, "work", HANDOFF_MESSAGE, message_id))
        assert wait_for(
            lambda: (
                client.hget(
                    conversation_key(cid, "work", "sms_outbox", outbox_id(message_id)), "state"
                )
                == b"done"
            )
        )
    assert int(item[b"attempt"]) == 2
    logged = [
        e
        for e in tracker_events(rasa_stack, cid)
        if (e.get("metadata") or {}).get(MESSAGE_ID) == message_id
    ]
    assert len(logged) == 1
    # Nothing is left for another sweep: the item is done and out of its kind's index.
    with redis.Redis.from_url(stack_redis.url) as client:
        wait_for(
            lambda: (
                client.hget(conversation_key(cid, "work", HANDOFF_MESSAGE, message_id), "state")
                == b"done"
                and client.zscore(
                    global_key("work", HANDOFF_MESSAGE), json.dumps([cid, message_id])
                )
                is None
            )
        )
    assert len(fake_twilio.messages_to(phone)) == sent + 1
