"""The durable turn's life (connectors/turns/durable.py) on a real redis-server: a duplicate finds
the item and is counted, an outcome is kept for late duplicates, a forgotten item makes the resend
new, and a drain stops what still runs and hands its leases (of every kind held) to the fleet."""

from __future__ import annotations

import asyncio
import secrets
import time

from connectors.turns.durable import HAND_OFF_MARGIN_SECONDS, DurableTurns
from omnichannel import metrics
from omnichannel.leases import Existing, InFlightWork, Lease


def _turns(url: str, kind: str = "test_turn", owner: str = "replica-a") -> DurableTurns:
    return DurableTurns(InFlightWork(url, kind, lease_seconds=30, owner=owner), "chat")


def _dedupe_hits() -> float:
    return metrics.DEDUPE_HITS.labels(channel="chat")._value.get()


async def test_a_duplicate_finds_the_item_and_then_its_outcome(redis_url: str) -> None:
    turns = _turns(redis_url)
    cid, mid = "c_" + secrets.token_hex(6), "m-" + secrets.token_hex(4)
    lease = await turns.accept(cid, mid, {"text": "hi"})
    assert isinstance(lease, Lease) and lease.attempt == 1
    before = _dedupe_hits()
    assert await turns.accept(cid, mid, {"text": "hi"}) == Existing("running", None)
    assert await turns.complete(lease, {"answer": "hello"})
    assert await turns.accept(cid, mid, {"text": "hi"}) == Existing("done", {"answer": "hello"})
    assert _dedupe_hits() == before + 2
    assert not await turns.complete(lease, {"answer": "again"})  # done once


async def test_a_forgotten_item_makes_the_resend_a_new_message(redis_url: str) -> None:
    turns = _turns(redis_url)
    cid, mid = "c_" + secrets.token_hex(6), "m-" + secrets.token_hex(4)
    lease = await turns.accept(cid, mid, {"text": "hi"})
    assert isinstance(lease, Lease)
    await turns.forget(lease)
    assert await turns.state(cid, mid) == {}
    assert isinstance(await turns.accept(cid, mid, {"text": "hi"}), Lease)


async def test_a_drain_stops_what_runs_and_hands_every_held_lease_off(redis_url: str) -> None:
    turns = _turns(redis_url)
    replies = InFlightWork(redis_url, "test_reply", lease_seconds=30, owner="replica-a")
    cid = "c_" + secrets.token_hex(6)
    quick = await turns.accept(cid, "quick", {})
    slow = await turns.accept(cid, "slow", {})
    reply = await replies.record(cid, "slow-reply", {})
    assert isinstance(quick, Lease) and isinstance(slow, Lease) and isinstance(reply, Lease)
    finished = []
    stopped = asyncio.Event()

    async def run_quick() -> None:
        async with turns.held(quick):
            await asyncio.sleep(0.05)
            finished.append(await turns.complete(quick, {}))

    async def run_slow() -> None:
        async with turns.held(slow), turns.held(reply, replies):
            try:
                await asyncio.sleep(60)
            finally:
                stopped.set()

    tasks = [asyncio.ensure_future(run_quick()), asyncio.ensure_future(run_slow())]
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await turns.hand_off(time.monotonic() + HAND_OFF_MARGIN_SECONDS + 0.3)
    assert 0.25 < time.monotonic() - started < 5
    assert finished == [True] and stopped.is_set() and all(task.done() for task in tasks)
    # Released: another replica takes both over at once, not after the 30 s lease.
    other = _turns(redis_url, owner="replica-b")
    taken = await other.take_over(cid, "slow")
    assert taken is not None and taken.attempt == 2
    other_replies = InFlightWork(redis_url, "test_reply", owner="replica-b")
    assert (await other_replies.take_over(cid, "slow-reply")) is not None
    assert await other.take_over(cid, "quick") is None  # done, nothing to take
