"""Durable in-flight work (omnichannel/leases.py) on a real Redis of each deployment kind: the
item and the fleet-wide index live in different Cluster slots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any, AsyncIterator, Dict, List

from prometheus_client import REGISTRY

from omnichannel.leases import Existing, InFlightWork, Lease, Takeover
from omnichannel.redis_client import redis_client
from testkit.processes import ROOT
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
    """Replicas whose clocks are an hour fast and an hour slow (libfaketime) record work and
    abandon it; another with a fast clock tries to take it over at once. The leases end when
    Redis's clock says, for everyone: neither replica's clock shortens or stretches them, and
    the sweeper here finds both items as soon as they lapse."""
    lease = 2.0
    async with skewed_replica("+1h", redis_url, lease) as ahead, skewed_replica(
        "-1h", redis_url, lease
    ) as behind:
        assert ahead.clock_offset > 3500 and behind.clock_offset < -3500
        assert (await ahead.run("record", "c-ahead"))["recorded"]
        assert (await behind.run("record", "c-behind"))["recorded"]
        seconds, micros = await redis_client(redis_url).time()
        redis_now_ms = seconds * 1000 + micros // 1000
        # By the slow recorder's clock its lease ended an hour ago, by the fast taker's too.
        taken = await ahead.run("take_over", "c-behind")
        assert taken["taken"] is False, "a fast clock took over a running lease"
    here = work(redis_url, "replica-here", lease=lease)
    for conversation_id in ("c-ahead", "c-behind"):
        lease_until = int((await here.state(conversation_id, "m1"))["lease_until"])
        assert 0 < lease_until - redis_now_ms <= lease * 1000
    # The index, which the sweepers read, scores the fast replica's work by Redis's clock too.
    score = await redis_client(redis_url).zscore(here.index_key, '["c-ahead", "m1"]')
    assert 0 < score - redis_now_ms <= lease * 1000

    resumed: List[Lease] = []

    async def resume(taken: Lease) -> None:
        resumed.append(taken)
        await here.complete(taken, {})

    sweeper = Takeover(interval_seconds=60)
    sweeper.register(here, resume)
    deadline = time.monotonic() + lease + 10
    found = 0
    while found < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found += await sweeper.sweep_once()
    assert found == 2, "abandoned work of a replica whose clock runs ahead stayed hidden"
    for _ in range(100):
        if len(resumed) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(taken.conversation_id for taken in resumed) == ["c-ahead", "c-behind"]
    assert all(taken.attempt == 2 for taken in resumed)


#: A replica's part, run in a process whose clock libfaketime shifts (``faketime``, Debian's
#: package of that name); monotonic time is left alone, only the wall clock is skewed. It reads
#: one command a line ("record c1", "take_over c1") and answers each with a JSON line, so what
#: it does happens at once, not after an interpreter's start-up.
_REPLICA = """
import asyncio, json, sys, time
from omnichannel.leases import InFlightWork, Lease

url, lease = sys.argv[1], float(sys.argv[2])

async def main():
    work = InFlightWork(url, "test_kind", lease_seconds=lease, keep_seconds=60,
                        owner="replica-" + sys.argv[3])
    print(json.dumps({"clock": time.time()}), flush=True)
    for line in sys.stdin:
        action, conversation_id = line.split()
        if action == "record":
            found = await work.record(conversation_id, "m1", {"n": 1})
            answer = {"recorded": isinstance(found, Lease)}
        else:
            answer = {"taken": await work.take_over(conversation_id, "m1") is not None}
        print(json.dumps(answer), flush=True)

asyncio.run(main())
"""


class SkewedReplica:
    def __init__(self, process: asyncio.subprocess.Process, clock_offset: float) -> None:
        self.process = process
        #: How far ahead of this machine's wall clock the replica's is, in seconds.
        self.clock_offset = clock_offset

    async def run(self, action: str, conversation_id: str) -> Dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{action} {conversation_id}\n".encode())
        await self.process.stdin.drain()
        return json.loads(await asyncio.wait_for(self.process.stdout.readline(), 30))


@contextlib.asynccontextmanager
async def skewed_replica(offset: str, url: str, lease: float) -> AsyncIterator[SkewedReplica]:
    """A replica process whose wall clock is ``offset`` (libfaketime's notation: "+1h",
    "-30m") away from the machine's."""
    process = await asyncio.create_subprocess_exec(
        "faketime",
        "-f",
        offset,
        sys.executable,
        "-c",
        _REPLICA,
        url,
        str(lease),
        offset,
        cwd=str(ROOT),
        env={**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout
        ready = await asyncio.wait_for(process.stdout.readline(), 60)
        assert ready, f"the replica under faketime {offset} did not start"
        yield SkewedReplica(process, json.loads(ready)["clock"] - time.time())
    finally:
        if process.stdin:
            process.stdin.close()  # the replica ends at the end of its input
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
