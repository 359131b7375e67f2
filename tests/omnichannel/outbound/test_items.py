"""Outbound items and their queue (omnichannel/outbound/items.py) on a real Redis: decided when
submitted and again at the send moment, held and sent when due, sent once across a replica
killed at the send moment, every refusal recorded with its reason, every key expiring."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import List

import pytest
import redis as sync_redis

from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.leases import Lease, Takeover
from omnichannel.outbound.consent import OPT_IN, OPT_OUT, ConsentStore
from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import (
    FAILED,
    QUEUED,
    REFUSED,
    SCHEDULED,
    SENT,
    Delivered,
    OutboundItem,
    OutboundQueue,
    new_item_id,
)
from omnichannel.outbound.policy import NOTIFICATION, OutboundPolicy, RateLimits

SAN_FRANCISCO = "+14155550123"
#: 18:00 UTC = 10:00 in San Francisco; 06:00 UTC = 22:00 there.
DAYTIME = datetime(2026, 12, 7, 18, 0, tzinfo=timezone.utc).timestamp()
NIGHT = datetime(2026, 12, 7, 6, 0, tzinfo=timezone.utc).timestamp()


class Clock:
    """A controllable clock: tests move it instead of sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingCourier:
    """A kind's delivery as the queue sees it: texts go to ``sent`` (shared between the
    replicas of a test, like a vendor's records), and a taken-over send looks there first."""

    sent: List[str]
    channel: str = "sms"
    hang_after_send: bool = False
    attempts: List[Lease] = field(default_factory=list)
    went: asyncio.Event = field(default_factory=asyncio.Event)

    async def route(self, item: OutboundItem) -> str:
        return self.channel

    async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
        self.attempts.append(lease)
        if not (lease.taken_over and item.item_id in self.sent):
            self.sent.append(item.item_id)
        self.went.set()
        if self.hang_after_send:
            await asyncio.Event().wait()
        return Delivered(SENT, channel, {"ref": item.item_id})


async def known_customer(redis_url: str, phone: str = SAN_FRANCISCO) -> str:
    identity = IdentityStore()
    return await identity.resolve_conversation(phone_address(phone), channel="sms")


def queue_for(
    redis_url: str, clock: Clock, policy: OutboundPolicy = OutboundPolicy(), **options: object
) -> OutboundQueue:
    return OutboundQueue(redis_url, OutboundGate(policy, clock=clock), **options)  # type: ignore[arg-type]


def item(cid: str, **changes: object) -> OutboundItem:
    return OutboundItem(
        new_item_id(), NOTIFICATION, cid, payload={"response": "utter_x"}, **changes
    )  # type: ignore[arg-type]


async def test_a_due_item_is_sent_at_once_and_recorded(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    sent: List[str] = []
    queue = queue_for(redis_url, Clock(DAYTIME))
    queue.register(NOTIFICATION, RecordingCourier(sent))
    done = await queue.submit(item(cid))
    assert (done.status, done.channel, done.outcome) == (SENT, "sms", {"ref": done.item_id})
    assert sent == [done.item_id]
    # Submitting the same id again returns the first result, nothing is sent twice.
    again = await queue.submit(OutboundItem(done.item_id, NOTIFICATION, cid))
    assert again.status == SENT and sent == [done.item_id]
    assert [i.item_id for i in await queue.store.recent()] == [done.item_id]
    assert [i.item_id for i in await queue.store.of_conversation(cid)] == [done.item_id]


async def test_quiet_hours_hold_the_item_and_it_goes_when_they_end(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    sent: List[str] = []
    clock = Clock(NIGHT)
    queue = queue_for(redis_url, clock)
    queue.register(NOTIFICATION, RecordingCourier(sent))
    held = await queue.submit(item(cid))
    assert (held.status, held.reason) == (SCHEDULED, "quiet_hours")
    # 08:00 in San Francisco.
    assert held.due == datetime(2026, 12, 7, 16, 0, tzinfo=timezone.utc).timestamp()
    clock.now = held.due - 1
    await queue.poll_once()
    assert sent == []
    clock.now = held.due
    assert await queue.poll_once() == 1
    assert sent == [held.item_id]
    assert (await queue.store.get(cid, held.item_id)).status == SENT  # type: ignore[union-attr]
    # Nothing is due any more: a restart (a new queue on the same Redis) sends nothing.
    restarted = queue_for(redis_url, clock)
    restarted.register(NOTIFICATION, RecordingCourier(sent))
    assert await restarted.poll_once() == 0 and sent == [held.item_id]


async def test_stop_refuses_and_start_lifts_it(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    consent = ConsentStore()
    await consent.record(phone_address(SAN_FRANCISCO), OPT_OUT, "sms")
    sent: List[str] = []
    queue = queue_for(redis_url, Clock(DAYTIME))
    queue.register(NOTIFICATION, RecordingCourier(sent))
    refused = await queue.submit(item(cid))
    assert (refused.status, refused.reason) == (REFUSED, "opted_out") and sent == []
    await consent.record(phone_address(SAN_FRANCISCO), OPT_IN, "sms")
    assert (await queue.submit(item(cid))).status == SENT
    history = await consent.history(phone_address(SAN_FRANCISCO))
    assert [(e.action, e.source) for e in history] == [(OPT_IN, "sms"), (OPT_OUT, "sms")]


async def test_a_stop_between_scheduling_and_sending_is_honoured(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    sent: List[str] = []
    clock = Clock(DAYTIME)
    queue = queue_for(redis_url, clock)
    queue.register(NOTIFICATION, RecordingCourier(sent))
    later = await queue.submit(item(cid, due=DAYTIME + 600))
    assert later.status == SCHEDULED
    await ConsentStore().record(phone_address(SAN_FRANCISCO), OPT_OUT, "whatsapp")
    clock.now += 600
    await queue.poll_once()
    assert sent == []
    assert (await queue.store.get(cid, later.item_id)).reason == "opted_out"  # type: ignore[union-attr]


async def test_a_number_that_never_contacted_us_needs_a_consent_record(redis_url: str) -> None:
    identity = IdentityStore()
    # A site user whose verified phone is on file but who never texted or called.
    cid = await identity.resolve_conversation(phone_address("+14155550199"))
    sent: List[str] = []
    queue = queue_for(redis_url, Clock(DAYTIME))
    queue.register(NOTIFICATION, RecordingCourier(sent))
    assert (await queue.submit(item(cid))).reason == "no_consent"
    assert (await queue.submit(item(cid, consent_record=True))).status == SENT


async def test_rate_limits(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    sent: List[str] = []
    policy = OutboundPolicy(limits=RateLimits(per_customer=2, global_count=100))
    queue = queue_for(redis_url, Clock(DAYTIME), policy)
    queue.register(NOTIFICATION, RecordingCourier(sent))
    results = [await queue.submit(item(cid)) for _ in range(3)]
    assert [(r.status, r.reason) for r in results] == [
        (SENT, None),
        (SENT, None),
        (REFUSED, "customer_rate_limit"),
    ]
    assert len(sent) == 2


async def test_a_replica_killed_at_the_send_moment_yields_one_send(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    sent: List[str] = []
    clock = Clock(DAYTIME)
    dying = queue_for(redis_url, clock, owner="replica-dead", lease_seconds=0.4)
    hanging = RecordingCourier(sent, hang_after_send=True)
    dying.register(NOTIFICATION, hanging)
    survivor = queue_for(redis_url, clock, owner="replica-b", lease_seconds=0.4)
    courier = RecordingCourier(sent)
    survivor.register(NOTIFICATION, courier)
    doomed = item(cid)
    task = asyncio.create_task(dying.submit(doomed))
    await asyncio.wait_for(hanging.went.wait(), 5)
    task.cancel()  # the replica dies after Twilio took the text, before recording it
    with pytest.raises(asyncio.CancelledError):
        await task
    sweeper = Takeover()
    sweeper.register(survivor.work, survivor._resume)
    # The survivor's poll does not claim it (the dead one's lease is recorded) ...
    await survivor.poll_once()
    assert courier.attempts == []
    # ... its sweeper takes it over once the lease has run out, and reconciles.
    deadline = asyncio.get_running_loop().time() + 5
    while not courier.attempts and asyncio.get_running_loop().time() < deadline:
        await sweeper.sweep_once()
        await asyncio.sleep(0.1)
    for _ in range(50):
        found = await survivor.store.get(cid, doomed.item_id)
        if found and found.status == SENT:
            break
        await asyncio.sleep(0.05)
    assert courier.attempts[0].taken_over
    assert sent == [doomed.item_id]
    assert found is not None and found.status == SENT


async def test_a_courier_failure_is_recorded_not_lost(redis_url: str) -> None:
    cid = await known_customer(redis_url)

    class Broken(RecordingCourier):
        async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
            raise RuntimeError("boom")

    queue = queue_for(redis_url, Clock(DAYTIME))
    queue.register(NOTIFICATION, Broken([]))
    failed = await queue.submit(item(cid))
    assert (failed.status, failed.reason) == (FAILED, "RuntimeError")


async def test_queued_items_are_shown_once_and_cancel_works(redis_url: str) -> None:
    cid = await known_customer(redis_url)

    class ToChat(RecordingCourier):
        async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
            return Delivered(QUEUED, "chat", reason="no chat open")

    queue = queue_for(redis_url, Clock(NIGHT))
    queue.register(NOTIFICATION, ToChat([], channel="chat"))
    waiting = await queue.submit(item(cid))
    assert waiting.status == QUEUED  # chat is not held by quiet hours
    assert [i.item_id for i in await queue.queued(cid)] == [waiting.item_id]
    assert await queue.shown(cid, waiting.item_id)
    assert not await queue.shown(cid, waiting.item_id)
    later = await queue.submit(item(cid, due=NIGHT + 3600))
    assert await queue.cancel(cid, later.item_id)
    assert not await queue.cancel(cid, later.item_id)


async def test_unknown_customer_refusals_are_logged_without_customer_data(redis_url: str) -> None:
    queue = queue_for(redis_url, Clock(DAYTIME))
    await queue.refuse_unknown(NOTIFICATION, "unknown_customer")
    assert await queue.store.refusals() == [
        {"at": DAYTIME, "kind": NOTIFICATION, "reason": "unknown_customer"}
    ]


async def test_every_key_expires_and_no_key_names_a_phone(redis_url: str) -> None:
    cid = await known_customer(redis_url)
    queue = queue_for(redis_url, Clock(NIGHT))
    queue.register(NOTIFICATION, RecordingCourier([]))
    await queue.submit(item(cid))
    await queue.submit(item(cid, due=NIGHT + 60))
    await ConsentStore().record(phone_address(SAN_FRANCISCO), OPT_OUT, "sms")
    await queue.refuse_unknown(NOTIFICATION, "unknown_customer")
    with sync_redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter("*"))
        assert keys
        for key in keys:
            assert client.ttl(key) > 0, key
            assert b"4155550123" not in key
