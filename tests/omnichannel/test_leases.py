"""Durable in-flight work (omnichannel/leases.py) on a real Redis of each deployment kind: the
item and the fleet-wide index live in different Cluster slots."""

from __future__ import annotations

import asyncio
from typing import List

from prometheus_client import REGISTRY

from omnichannel.leases import Existing, InFlightWork, Lease, Takeover
from omnichannel.redis_client import redis_client
from testkit.redis_topologies import RedisDeployment

LEASE = 0.3


def takeovers_counted() -> float:
    return REGISTRY.get_sample_value("omnichannel_takeovers_total", {"kind": "test_kind"}) or 0.0


def work(url: str, owner: str, lease: float = LEASE) -> InFlightWork:
    return InFlightWork(url, "test_kind", lease_seconds=lease, keep_seconds=60, owner=owner)


async def test_record_is_once_and_a_duplicate_sees_the_outcome(
    redis_deployment: RedisDeployment,
) -> None:
    first = work(redis_deployment.url, "replica-a")
    lease = await first.record("c1", "m1", {"text": "hi"})
    assert isinstance(lease, Lease) and lease.attempt == 1 and not lease.taken_over
    again = await work(redis_deployment.url, "replica-b").record("c1", "m1", {"text": "hi"})
    assert again == Existing(state="running", outcome=None)
    assert await first.depth() == 1
    assert await first.complete(lease, {"reply": "hello"})
    assert await first.depth() == 0
    assert await first.record("c1", "m1", {}) == Existing(state="done", outcome={"reply": "hello"})
    assert "payload" not in await first.state("c1", "m1")


async def test_a_renewed_lease_is_not_taken_over(redis_deployment: RedisDeployment) -> None:
    # A lease long enough that renewals every third of it hold on a loaded machine.
    owner = work(redis_deployment.url, "replica-a", lease=1.5)
    other = work(redis_deployment.url, "replica-b", lease=1.5)
    lease = await owner.record("c1", "m1", {"n": 1})
    assert isinstance(lease, Lease)
    async with owner.held(lease) as hold:
        await asyncio.sleep(4.5)
        # The index still scores the first lease's end; the item says it was renewed.
        assert await other.expired() == [("c1", "m1")]
        assert await other.take_over("c1", "m1") is None
        assert not hold.lost
    # Re-scored by the failed takeover: not expired any more until the renewed lease ends.
    assert await other.expired() == []


async def test_an_abandoned_lease_is_taken_over_once(redis_deployment: RedisDeployment) -> None:
    dead = work(redis_deployment.url, "replica-dead")
    lease = await dead.record("c1", "m1", {"n": 1})
    assert isinstance(lease, Lease)
    await asyncio.sleep(LEASE + 0.1)
    b, c = work(redis_deployment.url, "replica-b"), work(redis_deployment.url, "replica-c")
    taken = await asyncio.gather(b.take_over("c1", "m1"), c.take_over("c1", "m1"))
    winners = [t for t in taken if t is not None]
    assert len(winners) == 1
    assert winners[0].payload == {"n": 1} and winners[0].attempt == 2 and winners[0].taken_over
    # The dead owner, back from a pause, can neither renew nor complete: the work is not its own.
    assert not await dead.renew(lease)
    assert not await dead.complete(lease, {"late": True})
    winner = b if winners[0].owner == "replica-b" else c
    assert await winner.complete(winners[0], {"ok": True})
    assert (await dead.state("c1", "m1"))["outcome"] == '{"ok": true}'


async def test_release_hands_work_off_at_once(redis_deployment: RedisDeployment) -> None:
    draining = work(redis_deployment.url, "replica-a", lease=30)
    lease = await draining.record("c1", "m1", {})
    assert isinstance(lease, Lease)
    assert await work(redis_deployment.url, "replica-b", lease=30).take_over("c1", "m1") is None
    assert await draining.release(lease)
    taken = await work(redis_deployment.url, "replica-b", lease=30).take_over("c1", "m1")
    assert taken is not None and taken.owner == "replica-b"


async def test_stale_index_entries_are_dropped(redis_deployment: RedisDeployment) -> None:
    """An entry whose item was never written (the recording replica died in between) or has
    expired is removed by the sweep, not retried for ever."""
    items = work(redis_deployment.url, "replica-a")
    await redis_client(redis_deployment.url).zadd(items.index_key, {'["c9", "gone"]': 0})
    assert await items.expired() == [("c9", "gone")]
    assert await items.take_over("c9", "gone") is None
    assert await items.depth() == 0


async def test_every_key_expires(redis_deployment: RedisDeployment) -> None:
    items = work(redis_deployment.url, "replica-a")
    lease = await items.record("c1", "m1", {})
    assert isinstance(lease, Lease)
    redis = redis_client(redis_deployment.url)
    for key in (items.item_key("c1", "m1"), items.index_key):
        assert 0 < await redis.ttl(key) <= 60


async def test_the_sweeper_resumes_abandoned_work_through_its_kind(
    redis_deployment: RedisDeployment,
) -> None:
    dead = work(redis_deployment.url, "replica-dead")
    for n in range(3):
        assert isinstance(await dead.record(f"c{n}", "m", {"n": n}), Lease)
    resumed: List[Lease] = []
    here = work(redis_deployment.url, "replica-b")

    async def resume(lease: Lease) -> None:
        resumed.append(lease)
        assert await here.complete(lease, {"done": lease.payload["n"]})

    sweeper = Takeover(interval_seconds=60)
    sweeper.register(here, resume)
    taken_before = takeovers_counted()
    assert await sweeper.sweep_once() == 0  # the leases still hold
    # The sweep reports the fleet-wide depth of the kind (Prometheus /metrics).
    assert REGISTRY.get_sample_value("omnichannel_in_flight_work", {"kind": "test_kind"}) == 3
    await asyncio.sleep(LEASE + 0.1)
    assert await sweeper.sweep_once() == 3
    assert takeovers_counted() == taken_before + 3
    for _ in range(50):
        if len(resumed) == 3 and await here.depth() == 0:
            break
        await asyncio.sleep(0.02)
    assert sorted(lease.payload["n"] for lease in resumed) == [0, 1, 2]
    assert await here.depth() == 0
    sweeper.pause()
    assert isinstance(await dead.record("c9", "m", {}), Lease)
    await asyncio.sleep(LEASE + 0.1)
    assert await sweeper.sweep_once() == 0  # a draining replica takes nothing over


async def test_redis_time_decides_not_the_replicas_clock(redis_url: str) -> None:
    """The lease's end is Redis's time plus the lease, whatever this process's clock says."""
    items = work(redis_url, "replica-a", lease=10)
    assert isinstance(await items.record("c1", "m1", {}), Lease)
    seconds, micros = await redis_client(redis_url).time()
    lease_until = int((await items.state("c1", "m1"))["lease_until"])
    assert abs(lease_until - (seconds * 1000 + micros // 1000 + 10_000)) < 1000
