"""Durable in-flight work shared by the fleet: records with leases, renewed by the replica doing
the work and taken over by any other replica once the owner stops renewing them.

Work a customer was promised (an SMS reply due by REST, an acknowledged chat message, a running
voice turn) must not live only in one process's memory: a replica can be killed at any moment.
So the work is recorded here *before* it is acknowledged, as an item of a kind:

- the item (``omni:{cid}:work:<kind>:<item id>``, a HASH under the conversation's hash tag) holds
  its payload, its state (``running`` → ``done``), its owner, the lease's end and the attempt
  number; it is kept ``keep_seconds`` after it is done, so a late duplicate finds its outcome;
- an index per kind (``omni:work:<kind>``, a sorted set scored by the lease's end) lets any
  replica find work whose lease ran out. It is a hint: the item decides. A member whose item is
  done or gone is dropped, a member whose lease was renewed is re-scored, so the index needs no
  update on renewal and no transaction across slots.

Times are Redis's (``TIME`` inside the scripts), so replicas' clocks need not agree. The item
keeps the trace context of the message that recorded it (``traceparent``), so a takeover's spans
continue that message's trace.

A takeover is *at least once*: the new owner runs the work again from its payload, so each kind
makes its work idempotent (a chat or voice turn checks the event log for its message id under the
conversation lock; an SMS send is reconciled with Twilio's records). The lease only makes a
second runner rare and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

from omnichannel import metrics, tracing
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    conversation_key,
    global_key,
    redis_client,
)
from omnichannel.tasks import BackgroundTasks, cancellable

logger = logging.getLogger(__name__)

#: This process, as an owner of leases (host, pid and a random part: pids repeat after restarts).
REPLICA_ID = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"

#: Default lease: how long work stays with a replica that stopped renewing it.
DEFAULT_LEASE_SECONDS = 6.0
#: Default time an item is kept once done (duplicates within it find the outcome).
DEFAULT_KEEP_SECONDS = 24 * 3600
#: How many expired items one sweep takes over per kind, at most.
SWEEP_BATCH = 50

_NOW_MS = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: item. ARGV: owner, lease ms, payload json, keep seconds, traceparent ('' for none).
# Returns {1, lease_until} when recorded, {0, state, outcome or ''} when the item exists.
_RECORD = LuaScript(
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local found = redis.call('HMGET', KEYS[1], 'state', 'outcome')
  return {0, found[1] or '', found[2] or ''}
end
local until_ms = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'lease_until', until_ms,
  'attempt', 1, 'payload', ARGV[3], 'created', now, 'traceparent', ARGV[5] or '')
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, until_ms}
"""
)

# KEYS: item. ARGV: owner, lease ms. Returns the lease's new end, or 0 when the lease is lost.
_RENEW = LuaScript(
    _NOW_MS
    + """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] ~= 'running' or found[2] ~= ARGV[1] then return 0 end
local until_ms = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', until_ms)
return until_ms
"""
)

# KEYS: item. ARGV: new owner, lease ms.
# Returns {1, payload, attempt, lease_until, traceparent} when taken over; {0, lease_until} while
# the lease holds; {-1} when the item is gone; {-2} when it is done.
_TAKE_OVER = LuaScript(
    _NOW_MS
    + """
local found = redis.call('HMGET', KEYS[1], 'state', 'lease_until', 'payload', 'attempt',
  'traceparent')
if not found[1] then return {-1} end
if found[1] ~= 'running' then return {-2} end
if tonumber(found[2]) > now then return {0, tonumber(found[2])} end
local until_ms = now + tonumber(ARGV[2])
local attempt = tonumber(found[4]) + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', until_ms, 'attempt', attempt)
return {1, found[3], attempt, until_ms, found[5] or ''}
"""
)

# KEYS: item. ARGV: owner, outcome json. Returns 1 when done by this owner, 0 when the lease was
# lost (another replica took the work over, or it is done already).
_COMPLETE = LuaScript(
    """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] ~= 'running' or found[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[2])
redis.call('HDEL', KEYS[1], 'payload')
return 1
"""
)

# KEYS: item. ARGV: owner, payload json. Returns 1 when replaced, 0 when the lease was lost.
_UPDATE = LuaScript(
    """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] ~= 'running' or found[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'payload', ARGV[2])
return 1
"""
)

# KEYS: item. ARGV: owner. Ends the lease now, so another replica takes the work over at once
# (a draining replica hands off what it will not finish). Returns 1 when released.
_RELEASE = LuaScript(
    """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] ~= 'running' or found[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0)
return 1
"""
)

# KEYS: index. ARGV: score (lease end, ms), member, keep seconds, and "now" when the score is a
# lease's length to count from Redis's clock (work recorded this moment). One round trip on the
# path that accepts work: the entry and the index's expiry together.
_INDEX = LuaScript(
    _NOW_MS
    + """
local score = tonumber(ARGV[1])
if ARGV[4] == 'now' then score = now + score end
redis.call('ZADD', KEYS[1], score, ARGV[2])
return redis.call('EXPIRE', KEYS[1], ARGV[3])
"""
)

# KEYS: index. ARGV: limit. Members whose score (lease end) has passed.
_EXPIRED = LuaScript(
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Lease:
    """This replica's hold on one item: the work to do (``payload``) and whose it is."""

    kind: str
    conversation_id: str
    item_id: str
    payload: Dict[str, Any]
    #: 1 for the replica that recorded the work, one more for each takeover.
    attempt: int
    owner: str = REPLICA_ID
    #: The trace context of the message that recorded the work (W3C traceparent), if traced.
    traceparent: Optional[str] = None

    @property
    def taken_over(self) -> bool:
        return self.attempt > 1


@dataclass(frozen=True)
class Existing:
    """What :meth:`InFlightWork.record` found instead of recording: an item with that id, running
    (``outcome`` None) or done with its outcome."""

    state: str
    outcome: Optional[Dict[str, Any]]


class InFlightWork:
    """The durable in-flight items of one kind (``sms_outbox``, ``chat_turn``, ``voice_turn``)."""

    def __init__(
        self,
        redis_url: str,
        kind: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        keep_seconds: int = DEFAULT_KEEP_SECONDS,
        owner: str = REPLICA_ID,
    ) -> None:
        self.redis_url = redis_url
        self.kind = kind
        self.lease_ms = int(lease_seconds * 1000)
        self.keep_seconds = keep_seconds
        self.owner = owner

    @property
    def lease_seconds(self) -> float:
        return self.lease_ms / 1000

    def _redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    def item_key(self, conversation_id: str, item_id: str) -> str:
        return conversation_key(conversation_id, "work", self.kind, item_id)

    @property
    def index_key(self) -> str:
        return global_key("work", self.kind)

    @staticmethod
    def _member(conversation_id: str, item_id: str) -> str:
        return json.dumps([conversation_id, item_id])

    async def _index(
        self, conversation_id: str, item_id: str, lease_until_ms: int, *, from_now: bool = False
    ) -> None:
        """Scores the item's index entry with the end of its lease: ``lease_until_ms`` as Redis
        timed it, or, ``from_now``, that many milliseconds from Redis's clock now."""
        await _INDEX(
            self._redis(),
            [self.index_key],
            [
                lease_until_ms,
                self._member(conversation_id, item_id),
                self.keep_seconds,
                "now" if from_now else "at",
            ],
        )

    async def record(
        self, conversation_id: str, item_id: str, payload: Dict[str, Any]
    ) -> Lease | Existing:
        """Records new work, leased to this replica; or returns the item already recorded under
        ``item_id`` (a duplicate). Raises a Redis failure: the work must then not be accepted.

        The index entry is written first, so recorded work is always findable; an entry whose
        item was never written is dropped by the next sweep."""
        # Whoever takes the item over continues this trace (Takeover._resume).
        traceparent = tracing.current_traceparent() or ""
        # Scored "expired in a lease's time" by Redis's clock, as the item will be once recorded:
        # a replica whose clock runs ahead must not hide its work from the sweepers.
        await self._index(conversation_id, item_id, self.lease_ms, from_now=True)
        with tracing.span("work.record", {"kind": self.kind}) as span:
            result = await _RECORD(
                self._redis(),
                [self.item_key(conversation_id, item_id)],
                [self.owner, self.lease_ms, json.dumps(payload), self.keep_seconds, traceparent],
            )
            span.set(duplicate=int(result[0]) != 1)
        if int(result[0]) == 1:
            return Lease(
                self.kind, conversation_id, item_id, payload, 1, self.owner, traceparent or None
            )
        outcome = _text(result[2])
        return Existing(_text(result[1]), json.loads(outcome) if outcome else None)

    async def renew(self, lease: Lease) -> bool:
        """Extends the lease; False once it is lost (taken over, or the work is done)."""
        result = await _RENEW(
            self._redis(),
            [self.item_key(lease.conversation_id, lease.item_id)],
            [lease.owner, self.lease_ms],
        )
        return int(result) > 0

    async def complete(self, lease: Lease, outcome: Optional[Dict[str, Any]] = None) -> bool:
        """Marks the work done with its ``outcome`` (kept for duplicates); False when the lease
        was lost meanwhile (another replica owns the work now, or finished it)."""
        done = await _COMPLETE(
            self._redis(),
            [self.item_key(lease.conversation_id, lease.item_id)],
            [lease.owner, json.dumps(outcome or {})],
        )
        with contextlib.suppress(*REDIS_FAILURES):
            # A member left behind is dropped by the next sweep.
            await self._redis().zrem(
                self.index_key, self._member(lease.conversation_id, lease.item_id)
            )
        return bool(int(done))

    async def update(self, lease: Lease, payload: Dict[str, Any]) -> bool:
        """Replaces the payload a takeover resumes from, for work whose details are known only
        once it is recorded (a voice turn learns its utterance from the call state its record
        claims); False when the lease was lost meanwhile."""
        updated = await _UPDATE(
            self._redis(),
            [self.item_key(lease.conversation_id, lease.item_id)],
            [lease.owner, json.dumps(payload)],
        )
        return bool(int(updated))

    async def release(self, lease: Lease) -> bool:
        """Hands the work off: its lease ends now, so the next sweep (on any replica) takes it.
        For a draining replica, with work it will not finish in time."""
        released = await _RELEASE(
            self._redis(), [self.item_key(lease.conversation_id, lease.item_id)], [lease.owner]
        )
        if int(released):
            await self._index(lease.conversation_id, lease.item_id, 0)
        return bool(int(released))

    async def postpone(self, lease: Lease, seconds: float) -> bool:
        """Retry later: the lease now ends in ``seconds`` (the work is taken over, by any
        replica, only then; the holder stops renewing it by ending its block). For work that
        failed on something outside (a vendor down) and backs off; False when the lease was
        lost meanwhile."""
        # A renewal for ``seconds`` instead of a lease's time.
        until_ms = await _RENEW(
            self._redis(),
            [self.item_key(lease.conversation_id, lease.item_id)],
            [lease.owner, int(seconds * 1000)],
        )
        if not int(until_ms):
            return False
        await self._index(lease.conversation_id, lease.item_id, int(until_ms))
        return True

    async def state(self, conversation_id: str, item_id: str) -> Dict[str, str]:
        """The item's fields as stored (empty when there is none)."""
        raw = await self._redis().hgetall(self.item_key(conversation_id, item_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def take_over(self, conversation_id: str, item_id: str) -> Optional[Lease]:
        """Takes the work over when its lease has run out; None while the lease holds or when
        there is nothing left to do (the index is corrected either way)."""
        result = await _TAKE_OVER(
            self._redis(), [self.item_key(conversation_id, item_id)], [self.owner, self.lease_ms]
        )
        status = int(result[0])
        if status == 1:
            payload = json.loads(_text(result[1]))
            await self._index(conversation_id, item_id, int(result[3]))
            traceparent = _text(result[4]) if len(result) > 4 else ""
            return Lease(
                self.kind,
                conversation_id,
                item_id,
                payload,
                int(result[2]),
                self.owner,
                traceparent or None,
            )
        if status == 0:
            await self._index(conversation_id, item_id, int(result[1]))
        else:
            await self._redis().zrem(self.index_key, self._member(conversation_id, item_id))
        return None

    async def expired(self, limit: int = SWEEP_BATCH) -> List[Tuple[str, str]]:
        """(conversation id, item id) of indexed work whose lease the index says has run out."""
        members = await _EXPIRED(self._redis(), [self.index_key], [limit])
        found = []
        for member in members:
            conversation_id, item_id = json.loads(_text(member))
            found.append((conversation_id, item_id))
        return found

    async def depth(self) -> int:
        """Items of this kind not done yet, fleet-wide (as the index counts them)."""
        return int(await self._redis().zcard(self.index_key))

    @contextlib.asynccontextmanager
    async def held(self, lease: Lease) -> AsyncIterator[LeaseHold]:
        """Renews ``lease`` in the background while the block runs (every third of a lease)."""
        hold = LeaseHold(self, lease)
        renewer = asyncio.create_task(hold.keep_renewing())
        try:
            yield hold
        finally:
            # Stopped by the flag too: a cancellation that lands inside a Redis call can come
            # back as a Redis error, which the renewer logs and carries on after.
            hold.stopped = True
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer


class LeaseHold:
    """A lease being renewed; ``lost`` turns True once another replica took the work over."""

    def __init__(self, work: InFlightWork, lease: Lease) -> None:
        self.work = work
        self.lease = lease
        self.lost = False
        #: Set when the block holding the lease ends.
        self.stopped = False

    async def keep_renewing(self) -> None:
        while not self.stopped:
            await asyncio.sleep(self.work.lease_seconds / 3)
            if self.stopped:
                return
            try:
                if not await self.work.renew(self.lease):
                    self.lost = True
                    logger.warning(
                        "%s %s of %s: lease lost (another replica took the work over)",
                        self.lease.kind,
                        self.lease.item_id,
                        self.lease.conversation_id,
                    )
                    return
            except REDIS_FAILURES as error:
                # The lease outlives two missed renewals; the next one may succeed.
                logger.warning("%s lease not renewed: %s", self.lease.kind, type(error).__name__)


#: Resumes one item taken over from a replica that stopped renewing it.
Resume = Callable[[Lease], Awaitable[None]]


class Takeover:
    """This process's sweeper: finds work whose owner stopped renewing its lease (a killed or
    hung replica) and resumes it here, through the handler its kind registered.

    One per process (:func:`takeover`); each channel registers its kinds when its server starts.
    A draining server stops sweeping (:meth:`pause`): it takes no new work.
    """

    def __init__(self, interval_seconds: float = 1.0) -> None:
        self.interval = interval_seconds
        self._kinds: Dict[str, Tuple[InFlightWork, Resume]] = {}
        self._loop_tasks = BackgroundTasks("takeover sweeper", in_flight=False)
        self._resumed = BackgroundTasks("taken-over work")
        self.paused = False

    def register(self, work: InFlightWork, resume: Resume) -> None:
        self._kinds[work.kind] = (work, resume)
        if not len(self._loop_tasks):
            self._loop_tasks.start(self._sweep_forever(), "sweep expired leases")

    def pause(self) -> None:
        self.paused = True

    async def sweep_once(self) -> int:
        """Takes over and starts every expired item found now; returns how many."""
        started = 0
        for kind, (work, resume) in list(self._kinds.items()):
            try:
                metrics.IN_FLIGHT_WORK.labels(kind=kind).set(await work.depth())
                expired = await work.expired()
                for conversation_id, item_id in expired:
                    if self.paused:
                        return started
                    lease = await work.take_over(conversation_id, item_id)
                    if lease is None:
                        continue
                    logger.warning(
                        "%s %s of %s: taken over (attempt %d)",
                        kind,
                        item_id,
                        conversation_id,
                        lease.attempt,
                    )
                    metrics.TAKEOVERS.labels(kind=kind).inc()
                    self._resumed.start(self._resume(work, resume, lease), f"resume {kind}")
                    started += 1
            except REDIS_FAILURES as error:
                logger.warning("takeover sweep of %s failed: %s", kind, type(error).__name__)
        return started

    @staticmethod
    async def _resume(work: InFlightWork, resume: Resume, lease: Lease) -> None:
        # The takeover continues the trace of the message whose item it takes over.
        parent = tracing.context_of(lease.traceparent)
        attributes = {"kind": lease.kind, "attempt": lease.attempt}
        with tracing.span("work.takeover", attributes, parent=parent):
            async with work.held(lease):
                await resume(lease)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.paused:
                # A cancel landing in a Redis call must end the loop (see tasks.cancellable).
                await cancellable(self.sweep_once())


#: The sweeper of each event loop (tests run several servers' code on separate loops).
_takeovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Takeover] = (
    weakref.WeakKeyDictionary()
)


def takeover() -> Takeover:
    """This event loop's sweeper, made on first use."""
    loop = asyncio.get_running_loop()
    found = _takeovers.get(loop)
    if found is None:
        found = _takeovers[loop] = Takeover()
    return found
