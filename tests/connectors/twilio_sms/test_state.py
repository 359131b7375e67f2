"""The connector's Redis state (connectors/twilio_sms/state.py): the idempotency tokens and the
offered options on a real Redis without Rasa, then duplicate deliveries across two replicas of
the real stack (their dedupe is the sms_turn item, connectors/twilio_sms/turns.py)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors.twilio_sms.state import DeliveryLedger, OfferedButtons
from omnichannel.rendering.messages import Button
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisDeployment
from testkit.stack import RasaStack
from testkit.twilio_webhook import new_sid
from tests.connectors.twilio_sms.helpers import (
    conversation_of,
    delivery_recorded,
    inbound,
    post_signed,
    replies,
    user_events,
)
from tests.redis_matrix import sync_client


async def test_an_idempotency_token_stands_for_the_delivery_it_first_came_with(
    redis_deployment: RedisDeployment,
) -> None:
    ledger = DeliveryLedger(redis_deployment.url, ttl_seconds=120)
    token = secrets.token_hex(16)
    first, retry = new_sid(), new_sid()
    assert await ledger.delivery_of(first, token) == first
    assert await ledger.delivery_of(retry, token) == first  # a retry under a new MessageSid
    assert await ledger.delivery_of(retry, None) == retry
    assert await ledger.delivery_of(retry, secrets.token_hex(16)) == retry
    with sync_client(redis_deployment.url) as client:
        assert 0 < client.ttl(DeliveryLedger.token_key(token)) <= 120


async def test_offered_buttons_are_kept_replaced_and_cleared(
    redis_deployment: RedisDeployment,
) -> None:
    buttons = OfferedButtons(redis_deployment.url, ttl_seconds=300)
    cid = "c_" + secrets.token_hex(6)
    assert await buttons.get(cid) == ()
    offered = (Button("Order status", "/check_order_status"), Button("Refund", "/ask_refund"))
    await buttons.remember(cid, offered)
    assert await buttons.get(cid) == offered
    with sync_client(redis_deployment.url) as client:
        assert 0 < client.ttl(OfferedButtons.key(cid)) <= 300
    await buttons.remember(cid, offered[1:])
    assert await buttons.get(cid) == offered[1:]
    await buttons.remember(cid, ())  # a turn without options: the old ones no longer apply
    assert await buttons.get(cid) == ()


@pytest.mark.rasa_server
def test_duplicate_delivery_on_two_replicas_is_one_turn(
    rasa_stack: RasaStack, rasa_replica: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    params = inbound(rasa_stack, number, "what's your refund policy")
    token = {"I-Twilio-Idempotency-Token": secrets.token_hex(16)}
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda base: post_signed(rasa_stack, params, base_url=base, headers=token),
                (rasa_stack.base_url, rasa_replica.base_url),
            )
        )
    bodies = sorted((replies(a) for a in answers), key=len)
    # one replica ran the turn and answered it; the other got an empty TwiML (still running)
    # or the same answer (already finished), never a second turn
    assert bodies[1] and bodies[1][0].startswith("Here's our refund policy.")
    assert bodies[0] in ([], bodies[1])

    # a later redelivery (Twilio's retry) gets the stored answer, from either replica
    again = post_signed(rasa_stack, params, base_url=rasa_replica.base_url, headers=token)
    assert replies(again) == bodies[1]
    # a delivery carrying a seen idempotency token is recognised by the token alone
    retried = {**params, "MessageSid": new_sid()}
    assert replies(post_signed(rasa_stack, retried, headers=token)) == bodies[1]

    cid = conversation_of(stack_redis, number)
    events = user_events(rasa_stack, cid)
    assert [e["message_id"] for e in events] == [params["MessageSid"]]
    assert delivery_recorded(stack_redis, params["MessageSid"])
    assert not delivery_recorded(stack_redis, retried["MessageSid"])  # known by its token
