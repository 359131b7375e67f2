"""Arrival order of RedisFifoLockStore from cold connections, after Rasa's ``test_message_order``.

Rasa's test sends ten messages of one conversation at once, each calling ``lock()`` in order
0-9 and holding it for less time than the one before, and requires them served 0-9. Here the
same burst runs through ``lock()`` on a fresh Redis client every run, so every turn has to open
its own connection: what used to let the connections' opening order decide the queue order.

Run as a module (``python -m tests.connectors.test_lock_store_order URL CID NAME``) this file
is one replica sending such a burst once the test opens its gate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from redis.asyncio.cluster import RedisCluster

from connectors.lock_store import LockWaitTimeout
from omnichannel.redis_client import AnyRedis, redis_client
from testkit.processes import RedisServer, python, spawn, stop
from testkit.redis_topologies import RedisDeployment
from tests.connectors.test_lock_store import (
    SLACK,
    events_key,
    fast_store,
    gate_key,
    new_conversation,
)
from tests.redis_matrix import sync_client

BURST = 10
RUNS = 50
REPLICAS = 3
#: Hold times fall from 10 ms to 1 ms, as in Rasa's test, so later turns would overtake
#: earlier ones if the queue let them.
HOLD_SECONDS = [(BURST - index) / 1000 for index in range(BURST)]


async def cold_burst(url: str, conversation_id: str, name: str = "") -> List[int]:
    """BURST turns call ``lock()`` in order 0..BURST-1 on a client with no open connection.

    Returns the order in which they acquired the lock; records each turn's start and end in
    Redis when ``name`` is given (the cross-process test reads them there).
    """
    store = fast_store(url)
    client = redis_client(store.redis)  # the store's own client
    acquired: List[int] = []
    holders = 0

    async def turn(index: int) -> None:
        nonlocal holders
        async with store.lock(conversation_id):
            holders += 1
            assert holders == 1, "two turns held the lock at once"
            acquired.append(index)
            if name:
                await record(client, conversation_id, name, index, "acquired")
            await asyncio.sleep(HOLD_SECONDS[index])
            if name:
                await record(client, conversation_id, name, index, "released")
            holders -= 1

    try:
        await asyncio.gather(*(turn(index) for index in range(BURST)))
    finally:
        await client.close()
    return acquired


async def record(client: AnyRedis, conversation_id: str, name: str, index: int, event: str) -> None:
    entry = {"name": name, "index": index, "event": event}
    await client.rpush(events_key(conversation_id), json.dumps(entry))


def ready_key(conversation_id: str) -> str:
    return f"test:ready:{conversation_id}"


def test_a_burst_from_cold_connections_is_served_in_call_order(
    redis_deployment: RedisDeployment,
) -> None:
    """Each run on its own event loop, hence its own client and connection pool."""
    url = redis_deployment.url
    orders = [asyncio.run(cold_burst(url, new_conversation())) for _ in range(RUNS)]

    out_of_order = [order for order in orders if order != list(range(BURST))]
    assert out_of_order == [], f"{len(out_of_order)} of {RUNS} runs out of order"


def test_bursts_from_several_processes_keep_each_process_order(
    redis_deployment: RedisDeployment, tmp_path: Path
) -> None:
    conversation = new_conversation()
    names = [f"p{number}" for number in range(REPLICAS)]
    procs: List[subprocess.Popen] = []
    try:
        for name in names:
            args = [python(), "-m", "tests.connectors.test_lock_store_order"]
            args += [redis_deployment.url, conversation, name]
            procs.append(spawn(args, log_path=tmp_path / f"{name}.log"))
        with sync_client(redis_deployment.url) as client:
            deadline = time.monotonic() + 60
            while int(client.get(ready_key(conversation)) or 0) < REPLICAS:
                assert time.monotonic() < deadline, "the replicas did not start"
                assert all(proc.poll() is None for proc in procs), "a replica died"
                time.sleep(0.02)
            with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.rpush(gate_key(conversation, name), "go")
                pipe.execute()
            exit_codes = [proc.wait(60) for proc in procs]
            entries = [json.loads(raw) for raw in client.lrange(events_key(conversation), 0, -1)]
    finally:
        for proc in procs:
            stop(proc, timeout=5)

    assert exit_codes == [0] * REPLICAS, [(tmp_path / f"{n}.log").read_text() for n in names]
    starts, ends = entries[0::2], entries[1::2]
    assert len(entries) == 2 * REPLICAS * BURST
    assert [{**end, "event": "acquired"} for end in ends] == starts, "turns overlapped"
    assert {end["event"] for end in ends} == {"released"}
    served: Dict[str, List[int]] = {name: [] for name in names}
    for entry in starts:
        served[entry["name"]].append(entry["index"])
    assert served == {name: list(range(BURST)) for name in names}
    owners = [entry["name"] for entry in starts]
    switches = sum(1 for a, b in zip(owners[:-1], owners[1:], strict=True) if a != b)
    assert switches > REPLICAS - 1, "the bursts never overlapped: cross-process order untested"


async def test_a_turn_behind_a_stalled_enqueue_keeps_its_wait_bound(tmp_path: Path) -> None:
    """Redis stops answering (here: the server is suspended) while the first turn queues; the
    second turn, in line behind it, gives up at its own wait limit, not after the first."""
    server = RedisServer(tmp_path / "redis").start()
    store = fast_store(server.url, wait_timeout=0.5)
    conversation = new_conversation()

    async def enter() -> None:
        async with store.lock(conversation):
            pytest.fail("got the lock from a suspended Redis")

    os.killpg(server.proc.pid, signal.SIGSTOP)
    try:
        first, second = asyncio.create_task(enter()), asyncio.create_task(enter())
        started = time.monotonic()
        with pytest.raises(LockWaitTimeout, match=r"limit 0\.5 s\) for earlier turns"):
            await second
        waited = time.monotonic() - started
        assert not first.done(), "the first turn's enqueue should still be stalled"
        first.cancel()
        await asyncio.wait([first])
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
        server.stop()

    assert 0.5 <= waited < 0.5 + SLACK


async def _replica(url: str, conversation_id: str, name: str) -> None:
    """Waits for the gate on a separate connection, so the burst's connections start cold.

    What a running replica has done already is done first: the store's start-up access check,
    and on a cluster learning the slot map. Left to the burst, that start-up (hundreds of
    milliseconds on a cluster, varying between processes) would keep the bursts from
    overlapping at all.
    """
    client = redis_client(fast_store(url).redis)
    if isinstance(client, RedisCluster):
        await client.initialize()
    with sync_client(url) as gate:
        gate.incr(ready_key(conversation_id))
        while not gate.blpop([gate_key(conversation_id, name)], timeout=1):
            pass
    await cold_burst(url, conversation_id, name)


if __name__ == "__main__":
    asyncio.run(_replica(*sys.argv[1:4]))
