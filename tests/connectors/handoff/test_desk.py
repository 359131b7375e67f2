"""The helpdesk interface (connectors/handoff/desk.py) on a real Redis: every change reaches the
desk as a durable sync, a sync a dead replica left is retried elsewhere, a failing desk is
retried and then given up, and one conversation's syncs never overlap."""

from __future__ import annotations

import asyncio
import time
from typing import List, Tuple

from connectors.handoff.desk import AgentDesk
from connectors.handoff.engine import DESK_SYNC, MAX_SYNC_ATTEMPTS, HandoffEngine
from omnichannel.handoff.state import Actor, Handoff
from omnichannel.leases import InFlightWork, Lease, Takeover
from omnichannel.settings import Settings


class RecordingDesk(AgentDesk):
    """A desk that notes the state it read at each sync (and can be told to fail)."""

    name = "recorder"

    def __init__(self, failures: int = 0, seconds: float = 0.0) -> None:
        self.synced: List[Tuple[str, str]] = []
        self.failures = failures
        self.seconds = seconds
        self.running = 0
        self.overlapped = False

    async def sync(self, conversation_id: str, engine: HandoffEngine) -> None:
        self.running += 1
        self.overlapped = self.overlapped or self.running > 1
        try:
            await asyncio.sleep(self.seconds)
            if self.failures:
                self.failures -= 1
                raise RuntimeError("helpdesk unreachable")
            handoff = await engine.store.get(conversation_id)
            self.synced.append((conversation_id, handoff.state if handoff else "none"))
        finally:
            self.running -= 1


async def until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def engine_with(redis_url: str, desk: AgentDesk) -> HandoffEngine:
    engine = HandoffEngine(Settings.from_env({"REDIS_URL": redis_url}))
    engine.desks[desk.name] = desk
    return engine


async def test_transitions_reach_the_desk(redis_url: str) -> None:
    desk = RecordingDesk()
    engine = engine_with(redis_url, desk)
    await engine.add_desk(desk)
    assert "recorder" in await engine.store.desks_alive(time.time()), "people answer there"
    await engine.store.request(Handoff.requested("c_d1", "sms", "customer_asked", 1.0))
    await engine.changed("c_d1")
    await until(lambda: desk.synced == [("c_d1", "queued")])
    await engine.claim("c_d1", Actor.agent("a1", "Dana"))
    await until(lambda: desk.synced[-1:] == [("c_d1", "claimed")])
    # The item completes just after the desk's sync returns: awaited, not assumed.
    for _ in range(250):
        if await engine.desk_work.depth() == 0:
            break
        await asyncio.sleep(0.02)
    assert await engine.desk_work.depth() == 0, "every sync completed"


async def test_a_sync_a_dead_replica_left_is_done_elsewhere(redis_url: str) -> None:
    desk = RecordingDesk()
    engine = engine_with(redis_url, desk)
    await engine.store.request(Handoff.requested("c_d2", "chat", "customer_asked", 1.0))
    dead = InFlightWork(redis_url, DESK_SYNC, owner="dead/1/x", lease_seconds=0.1)
    assert isinstance(await dead.record("c_d2", "recorder-1", {"desk": "recorder"}), Lease)
    sweeper = Takeover(interval_seconds=60)
    sweeper.register(engine.desk_work, engine._sync)
    await asyncio.sleep(0.2)
    assert await sweeper.sweep_once() == 1
    await until(lambda: desk.synced == [("c_d2", "queued")])
    state = await engine.desk_work.state("c_d2", "recorder-1")
    assert state["state"] == "done" and state["attempt"] == "2"


async def test_a_failing_desk_is_retried_then_given_up(redis_url: str) -> None:
    desk = RecordingDesk(failures=1)
    engine = engine_with(redis_url, desk)
    await engine.store.request(Handoff.requested("c_d3", "sms", "customer_asked", 1.0))
    work = InFlightWork(redis_url, DESK_SYNC, owner="here/1/x", lease_seconds=0.1)
    first = await work.record("c_d3", "recorder-1", {"desk": "recorder"})
    await engine._sync(first)
    assert (await work.state("c_d3", "recorder-1"))["state"] == "running", "left for a retry"
    desk.failures = 1
    last = Lease(
        DESK_SYNC, "c_d3", "recorder-1", {"desk": "recorder"}, MAX_SYNC_ATTEMPTS, work.owner
    )
    await engine._sync(last)
    assert (await work.state("c_d3", "recorder-1"))["state"] == "done", "given up, logged"
    assert desk.synced == []


async def test_one_conversations_syncs_never_overlap(redis_url: str) -> None:
    desk = RecordingDesk(seconds=0.1)
    engine = engine_with(redis_url, desk)
    await engine.store.request(Handoff.requested("c_d4", "sms", "customer_asked", 1.0))
    for _ in range(4):
        await engine.changed("c_d4")
    await until(lambda: len(desk.synced) == 4)
    assert not desk.overlapped


async def test_news_outside_a_turn_reaches_the_desk_only_while_the_hand_off_is_open(
    redis_url: str,
) -> None:
    """A call's end-of-call report lands on a queued hand-off: the desk syncs; on a closed one
    (or none), nothing is asked of it."""
    desk = RecordingDesk()
    engine = engine_with(redis_url, desk)
    await engine.conversation_changed("c_d5")
    await engine.store.request(Handoff.requested("c_d5", "voice", "customer_asked", 1.0))
    await engine.conversation_changed("c_d5")
    await until(lambda: desk.synced == [("c_d5", "queued")])
    await engine.store.update("c_d5", lambda h: h.resolve(Actor.agent("a", "A"), 2.0))
    await engine.conversation_changed("c_d5")
    # A sync would have been recorded before conversation_changed returned: none was.
    assert desk.synced == [("c_d5", "queued")] and await engine.desk_work.depth() == 0
