"""Booking a callback (omnichannel/callbacks/booking.py) on a real Redis: the conversation's
own number only, the gate's refusal before any promise, one waiting callback per
conversation, and an agent's request held by quiet hours where the customer's is not."""

from __future__ import annotations

from datetime import datetime, timezone

from omnichannel.addresses import phone_address, user_address
from omnichannel.callbacks.booking import BOOKED, MOVED, NO_NUMBER, REFUSED, book_callback
from omnichannel.callbacks.items import BY_AGENT, callbacks_of
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import SCHEDULED, OutboundQueue
from omnichannel.outbound.policy import OutboundPolicy
from testkit.phone_numbers import new_phone_number

#: Noon UTC on a Tuesday: inside the default quiet hours' day for a UTC customer.
NOON = datetime(2026, 3, 3, 12, 0, tzinfo=timezone.utc).timestamp()


def queue_at(redis_url: str, now: float, **policy: str) -> OutboundQueue:
    gate = OutboundGate(OutboundPolicy.from_env(policy), clock=lambda: now)
    return OutboundQueue(redis_url, gate)


async def texted(phone: str = "") -> str:
    return await IdentityStore().resolve_conversation(
        phone_address(phone or new_phone_number()), channel="sms"
    )


async def test_a_conversation_without_a_number_cannot_book(redis_url: str) -> None:
    queue = queue_at(redis_url, NOON)
    cid = await IdentityStore().resolve_conversation(user_address("no-phone"), channel="chat")
    assert (await book_callback(queue, cid, NOON, opening="Hi.")).result == NO_NUMBER
    assert await callbacks_of(queue.store, cid) == []


async def test_a_number_that_said_stop_is_refused_before_any_promise(redis_url: str) -> None:
    queue = queue_at(redis_url, NOON)
    cid = await texted()
    await IdentityStore().set_sms_opt_out(cid, True)
    booking = await book_callback(queue, cid, NOON, opening="Hi.")
    assert (booking.result, booking.reason) == (REFUSED, "opted_out")
    assert await callbacks_of(queue.store, cid) == []


async def test_booking_again_moves_the_waiting_callback(redis_url: str) -> None:
    queue = queue_at(redis_url, NOON)
    cid = await texted()
    first = await book_callback(queue, cid, NOON + 3600, opening="Hi.")
    again = await book_callback(
        queue, cid, NOON + 7200, opening="About order 40213.", topic="40213"
    )
    assert (first.result, again.result) == (BOOKED, MOVED)
    [item] = await callbacks_of(queue.store, cid)
    assert (item.status, item.due, item.payload["topic"]) == (SCHEDULED, NOON + 7200, "40213")
    assert item.payload["opening"] == "About order 40213."
    assert item.customer_requested and item.source == "customer"


async def test_quiet_hours_hold_an_agents_request_but_not_the_customers(redis_url: str) -> None:
    night = datetime(2026, 3, 3, 23, 0, tzinfo=timezone.utc).timestamp()
    morning = datetime(2026, 3, 4, 8, 0, tzinfo=timezone.utc).timestamp()
    queue = queue_at(redis_url, night, OUTBOUND_QUIET_HOURS="21:00-08:00")
    cid = await texted("+442071838750")  # a London number: its zone is the customer's
    agent = await book_callback(queue, cid, night, opening="Hi.", source=BY_AGENT)
    assert agent.result == BOOKED and agent.due == morning
    other = await texted("+442071838751")
    customer = await book_callback(queue, other, night, opening="Hi.")
    assert customer.result == BOOKED and customer.due == night
