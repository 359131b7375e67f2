"""RedisFifoLockStore against a real redis-server, with real OS processes as competing replicas.

Run as a module (``python -m tests.connectors.test_lock_store CID NAME HOLD``) this file is the
competing replica: it takes the lock, records when it got and left it, and holds it meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, Sequence

import pytest
from rasa.core.lock_store import LockError, LockStore
from rasa.core.utils import AvailableEndpoints

from connectors.lock_store import (
    MAX_RECHECK_INTERVAL,
    FifoLockSettings,
    LockWaitTimeout,
    RedisFifoLockStore,
)
from omnichannel.errors import ConfigError
from omnichannel.redis_client import StateUnavailable, redis_client
from testkit.processes import RedisServer, free_port, python, spawn, stop

LEASE = 1.0
RECHECK = 0.2
ORDER_TEST_LEASE = 5.0
#: Slack for a loaded 2-core machine on top of the protocol's own bounds.
SLACK = 1.5


def new_conversation() -> str:
    return f"c_{uuid.uuid4().hex[:12]}"


def fast_store(url: Optional[str] = None, **overrides: float) -> RedisFifoLockStore:
    options = {"lease_seconds": LEASE, "wait_timeout": 30.0, "recheck_interval": RECHECK}
    options.update(overrides)
    return RedisFifoLockStore(url, FifoLockSettings(**options))


def events_key(conversation_id: str) -> str:
    return f"test:events:{conversation_id}"


def gate_key(conversation_id: str, name: str) -> str:
    return f"test:gate:{conversation_id}:{name}"


async def recorded_events(conversation_id: str) -> List[Dict]:
    raw = await redis_client().lrange(events_key(conversation_id), 0, -1)
    return [json.loads(item) for item in raw]


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def tickets_are(store: RedisFifoLockStore, conversation_id: str, expected: int) -> bool:
    return await store.live_tickets(conversation_id) == expected


async def wait_for_event(conversation_id: str, name: str, event: str) -> Dict:
    async def happened() -> bool:
        return any(
            e["name"] == name and e["event"] == event
            for e in await recorded_events(conversation_id)
        )

    await wait_until(happened, 30, f"{name} {event}")
    return next(
        e
        for e in await recorded_events(conversation_id)
        if e["name"] == name and e["event"] == event
    )


async def wait_for_exit(proc: subprocess.Popen) -> int:
    return await asyncio.to_thread(proc.wait, 30)


@pytest.fixture
def workers(tmp_path: Path):
    """Starts competing replicas (OS processes); stops any still running after the test."""
    started: List[subprocess.Popen] = []

    def start(
        conversation_id: str, name: str, hold: float, lease: float = LEASE, gated: bool = False
    ) -> subprocess.Popen:
        args = [python(), "-m", "tests.connectors.test_lock_store", conversation_id, name]
        args += [str(hold), "--lease", str(lease), "--recheck", str(RECHECK)]
        if gated:
            args.append("--gated")
        proc = spawn(args, log_path=tmp_path / f"worker-{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc, timeout=5)


async def test_turns_from_several_processes_run_in_arrival_order(redis_deployment, workers):
    # Leases long enough that a starved CI machine's late renewal cannot reorder the queue:
    # this test is about order; lapsing leases have tests of their own.
    conversation = new_conversation()
    store = fast_store(lease_seconds=ORDER_TEST_LEASE)
    names = [f"w{i}" for i in range(4)]
    async with store.lock(conversation):
        procs = [
            workers(conversation, name, hold=0.05, lease=ORDER_TEST_LEASE, gated=True)
            for name in names
        ]
        for queued, name in enumerate(names, start=2):
            await redis_client().rpush(gate_key(conversation, name), "go")
            await wait_until(
                lambda n=queued: tickets_are(store, conversation, n), 30, f"{name} to queue"
            )
    assert [await wait_for_exit(proc) for proc in procs] == [0] * len(names)

    sequence = [(e["name"], e["event"]) for e in await recorded_events(conversation)]
    assert sequence == [(name, event) for name in names for event in ("acquired", "released")]
    assert await store.live_tickets(conversation) == 0


async def hand_off_seconds(store: RedisFifoLockStore) -> float:
    """Time from the holder leaving its turn to the queued waiter starting its own."""
    conversation = new_conversation()
    holding = asyncio.Event()
    released_at = acquired_at = 0.0

    async def holder() -> None:
        nonlocal released_at
        async with store.lock(conversation):
            holding.set()
            await wait_until(lambda: tickets_are(store, conversation, 2), 10, "the waiter")
            released_at = time.perf_counter()

    async def waiter() -> None:
        nonlocal acquired_at
        await holding.wait()
        async with store.lock(conversation):
            acquired_at = time.perf_counter()

    await asyncio.gather(holder(), waiter())
    return acquired_at - released_at


async def test_next_waiter_starts_milliseconds_after_release(redis_deployment):
    """With the safety re-check at its slowest (4 s), only the wake-up can explain a fast start:
    re-checks alone would start the next waiter 2 s after a release in the median, and some
    of twelve hand-offs 3 s after (the bounds leave a loaded machine room). How many
    milliseconds a hand-off takes is measured by `make bench` (bench_lock_store)."""
    store = fast_store(recheck_interval=MAX_RECHECK_INTERVAL)
    gaps = [await hand_off_seconds(store) for _ in range(12)]

    assert statistics.median(gaps) < MAX_RECHECK_INTERVAL / 4, gaps
    assert max(gaps) < MAX_RECHECK_INTERVAL / 2, gaps


async def test_lease_is_renewed_while_a_long_turn_runs(redis_deployment, workers):
    conversation = new_conversation()
    workers(conversation, "long", hold=3.5, lease=LEASE)
    holder_in = await wait_for_event(conversation, "long", "acquired")

    async with fast_store().lock(conversation) as turn:
        acquired_at = time.time()
    holder_out = await wait_for_event(conversation, "long", "released")

    assert holder_out["t"] - holder_in["t"] >= 3.4
    assert acquired_at >= holder_out["t"]
    assert turn.waited_seconds > 3 * LEASE - SLACK
    assert holder_out["lease_lost"] is False


async def test_queue_moves_on_when_the_holder_process_is_killed(redis_deployment, workers):
    conversation = new_conversation()
    holder = workers(conversation, "doomed", hold=-1, lease=LEASE)
    await wait_for_event(conversation, "doomed", "acquired")
    acquired_at = 0.0

    async def waiter() -> None:
        nonlocal acquired_at
        async with fast_store().lock(conversation):
            acquired_at = time.time()

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(2 * LEASE)
    assert not waiting.done(), "the waiter got in while the holder was alive"
    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.time()
    await asyncio.wait_for(waiting, 10)

    assert 0 < acquired_at - killed_at < LEASE + RECHECK + SLACK
    assert await wait_for_exit(holder) == -signal.SIGKILL


async def test_a_waiter_killed_in_the_queue_does_not_block_it(redis_deployment, workers):
    conversation = new_conversation()
    store = fast_store()
    waiter_lease = 2.0
    acquired_at = 0.0

    async def later_waiter() -> None:
        nonlocal acquired_at
        async with store.lock(conversation):
            acquired_at = time.time()

    async with store.lock(conversation):
        doomed = workers(conversation, "doomed", hold=0.05, lease=waiter_lease)
        await wait_until(lambda: tickets_are(store, conversation, 2), 30, "the doomed waiter")
        os.kill(doomed.pid, signal.SIGKILL)
        later = asyncio.create_task(later_waiter())
        await wait_until(lambda: tickets_are(store, conversation, 3), 5, "the later waiter")
        released_at = time.time()
    await asyncio.wait_for(later, 10)

    assert 0 < acquired_at - released_at < waiter_lease + RECHECK + SLACK
    assert await recorded_events(conversation) == []
    assert await store.live_tickets(conversation) == 0


async def test_waiting_past_the_bound_raises_and_leaves_the_queue(redis_deployment):
    conversation = new_conversation()
    store = fast_store()
    impatient = fast_store(wait_timeout=0.5)
    release = asyncio.Event()

    async def holder() -> None:
        async with store.lock(conversation):
            await release.wait()

    holding = asyncio.create_task(holder())
    await wait_until(lambda: tickets_are(store, conversation, 1), 5, "the holder")
    started = time.monotonic()
    with pytest.raises(LockWaitTimeout, match=r"limit 0\.5 s.*1 earlier turn") as raised:
        async with impatient.lock(conversation):
            pytest.fail("got the lock while it was held")
    waited = time.monotonic() - started

    assert isinstance(raised.value, LockError)
    assert 0.5 <= waited < 0.5 + SLACK
    assert await store.live_tickets(conversation) == 1
    release.set()
    await holding
    assert await store.live_tickets(conversation) == 0
    async with store.lock(conversation) as turn:
        # A ticket left behind would hold the queue for its lease.
        assert turn.waited_seconds < LEASE


async def test_cancelled_waiter_leaves_and_an_empty_queue_leaves_no_keys(redis_deployment):
    conversation = new_conversation()
    store = fast_store()
    async with store.lock(conversation):

        async def waiter() -> None:
            async with store.lock(conversation):
                pytest.fail("the cancelled waiter got the lock")

        waiting = asyncio.create_task(waiter())
        await wait_until(lambda: tickets_are(store, conversation, 2), 5, "queueing")
        waiting.cancel()
        await asyncio.wait([waiting])
        assert await store.live_tickets(conversation) == 1

    leftover = [key async for key in redis_client().scan_iter(match=f"omni:{{{conversation}}}:*")]
    assert leftover == []


class AnswerHoldingProxy:
    """A TCP proxy in front of Redis that can hold Redis's answers back (requests still pass):
    a command then runs in Redis while its caller is still waiting for the reply."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.port = free_port()
        self.released = asyncio.Event()
        self.released.set()
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> AnswerHoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pipe(source, sink, hold: bool) -> None:
            while data := await source.read(65536):
                if hold:
                    await self.released.wait()
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(
            pipe(client_in, redis_out, hold=False),
            pipe(redis_in, client_out, hold=True),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()


async def test_a_waiter_cancelled_before_its_queueing_is_answered_leaves_no_ticket(
    redis_url: str,
) -> None:
    """Redis queued the waiter's ticket, the answer had not come back when the waiter was
    cancelled (a client gone): the ticket is withdrawn, not left to hold the queue for a
    lease."""
    proxy = await AnswerHoldingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])).start()
    direct, proxied = fast_store(), fast_store(f"redis://127.0.0.1:{proxy.port}/0")
    conversation = new_conversation()
    try:
        async with direct.lock(conversation):  # queues a ticket, and loads the scripts
            assert await proxied.live_tickets(conversation) == 1  # a connection, warm
            proxy.released.clear()

            async def waiter() -> None:
                async with proxied.lock(conversation):
                    pytest.fail("the cancelled waiter got the lock")

            waiting = asyncio.create_task(waiter())
            await wait_until(lambda: tickets_are(direct, conversation, 2), 5, "queueing")
            waiting.cancel()
            proxy.released.set()
            await asyncio.wait([waiting], timeout=10)
            assert waiting.cancelled()
            assert await direct.live_tickets(conversation) == 1
    finally:
        proxy.released.set()
        await proxy.stop()


@pytest.mark.unit
async def test_unreachable_redis_raises_state_unavailable_after_the_retry_bound(monkeypatch):
    monkeypatch.setenv("REDIS_RETRY_SECONDS", "1.5")
    store = fast_store(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match="Redis unavailable while queueing"):
        async with store.lock(new_conversation()):
            pytest.fail("got a lock without Redis")
    assert 0.7 < time.monotonic() - started < 3


async def test_redis_dying_fails_the_waiter_and_the_release_loudly(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        store = fast_store(server.url)
        conversation = new_conversation()
        holder_done = asyncio.Event()
        outcomes: Dict[str, BaseException] = {}

        async def holder() -> None:
            try:
                async with store.lock(conversation):
                    await holder_done.wait()
            except StateUnavailable as error:
                outcomes["holder"] = error

        async def waiter() -> None:
            try:
                async with store.lock(conversation):
                    pytest.fail("the waiter got the lock from a dead Redis")
            except StateUnavailable as error:
                outcomes["waiter"] = error

        tasks = [asyncio.create_task(holder())]
        await wait_until(lambda: tickets_are(store, conversation, 1), 5, "holding")
        tasks.append(asyncio.create_task(waiter()))
        await wait_until(lambda: tickets_are(store, conversation, 2), 5, "queueing")
        server.kill()
        await asyncio.wait_for(tasks[1], 8)
        holder_done.set()
        await asyncio.wait_for(tasks[0], 8)
    finally:
        server.stop()

    assert "waiting for the turn lock" in str(outcomes["waiter"])
    assert "releasing the turn lock" in str(outcomes["holder"])


async def test_endpoints_yml_entry_builds_the_store(redis_url, tmp_path):
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        "lock_store:\n"
        "  type: connectors.lock_store.RedisFifoLockStore\n"
        "  url: ${REDIS_URL}\n"
        "  lease_seconds: 2\n"
        "  recheck_interval: 0.5\n"
    )
    store = LockStore.create(AvailableEndpoints.read_endpoints(str(endpoints)).lock_store)

    assert isinstance(store, RedisFifoLockStore)
    assert store.url == redis_url
    assert store.settings == FifoLockSettings(lease_seconds=2, recheck_interval=0.5)
    async with store.lock(new_conversation()) as turn:
        assert turn.ticket == 1
    with pytest.raises(NotImplementedError, match="use `async with lock_store.lock"):
        store.issue_ticket("c_any")


@pytest.mark.unit
@pytest.mark.parametrize(
    "options, reason",
    [
        ({"lease": 5}, "unknown lock_store option"),
        ({"wait_timeout": "soon"}, "wait_timeout must be a number"),
        ({"lease_seconds": 0}, "lease_seconds must be a positive number"),
        ({"recheck_interval": 30}, "recheck_interval must be at most"),
    ],
)
def test_bad_lock_store_options_are_rejected(options, reason):
    with pytest.raises(ConfigError, match=reason):
        FifoLockSettings.from_options(options)


async def _compete(args: argparse.Namespace) -> None:
    client = redis_client()
    if args.gated:
        while not await client.blpop([gate_key(args.conversation, args.name)], timeout=1):
            pass
    store = RedisFifoLockStore(
        settings=FifoLockSettings(
            lease_seconds=args.lease, wait_timeout=60, recheck_interval=args.recheck
        )
    )

    async def record(event: str, **extra: object) -> None:
        entry = {"name": args.name, "event": event, "t": time.time(), **extra}
        await client.rpush(events_key(args.conversation), json.dumps(entry))

    async with store.lock(args.conversation) as turn:
        await record("acquired")
        await asyncio.sleep(args.hold if args.hold >= 0 else 3600)
        await record("released", lease_lost=turn.lease_lost)


def _competitor_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="a replica competing for one conversation")
    parser.add_argument("conversation")
    parser.add_argument("name")
    parser.add_argument("hold", type=float, help="seconds to hold the lock; negative = forever")
    parser.add_argument("--lease", type=float, default=LEASE)
    parser.add_argument("--recheck", type=float, default=RECHECK)
    parser.add_argument("--gated", action="store_true", help="queue only once the test says so")
    asyncio.run(_compete(parser.parse_args(argv)))


if __name__ == "__main__":
    _competitor_main(sys.argv[1:])
