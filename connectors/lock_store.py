"""A Rasa lock store that keeps each conversation's turns strictly in arrival order.

Rasa's ``RedisLockStore`` is not atomic across replicas, polls once a second and gives every
ticket a fixed 60 s lifetime, so a slow LLM turn loses exclusivity and queued messages wait up
to a second after the lock frees. Here every queue change is one Lua script (atomic on any
number of replicas), the releasing turn wakes the next ticket through a per-ticket list the
waiter BLPOPs on (hand-off in about a round trip), and every ticket carries a short lease that
its ``lock()`` call renews in the background: a live turn keeps the lock for as long as it runs,
a crashed process's tickets lapse after one lease and the queue moves on. Within one process,
``lock()`` calls for a conversation queue in Redis one after the other in the order they were
made (see ``_ArrivalOrder``), so turns that arrive together are served in arrival order.

Named in endpoints.yml as::

    lock_store:
      type: connectors.lock_store.RedisFifoLockStore
      url: ${REDIS_URL}
      lease_seconds: 10      # optional
      wait_timeout: 60       # optional
      recheck_interval: 1    # optional

Keys (all hash-tagged on the conversation, so one Cluster slot):
``omni:{cid}:lock:seq`` ticket counter, ``omni:{cid}:lock:queue`` ZSET token -> ticket number,
``omni:{cid}:lock:leases`` ZSET token -> lease deadline (Redis server time, ms),
``omni:{cid}:lock:wake:<token>`` LIST the releasing turn pushes to when that ticket is next.
The wake keys are built inside the scripts from the declared prefix (same hash tag, same slot).
All keys are deleted when the queue empties and otherwise expire an hour after the last change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Deque,
    Dict,
    List,
    Mapping,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
)

from rasa.core.lock_store import LOCK_LIFETIME, LockError, LockStore
from rasa.utils.endpoints import EndpointConfig

from omnichannel.errors import ConfigError
from omnichannel.metrics import LOCK_WAIT_SECONDS
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    StateUnavailable,
    check_access_at_start_up,
    check_namespace,
    conversation_key,
    redis_client,
)
from omnichannel.redis_config import RASA_CONNECTION_OPTIONS, from_rasa_options

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 10.0
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_RECHECK_INTERVAL = 1.0
#: A waiter blocks in BLPOP for at most the recheck interval; the shared client's socket
#: timeout is 5 s, so a longer block would be reported as a dead Redis.
MAX_RECHECK_INTERVAL = 4.0
#: Garbage collection for queues whose every process died; live tickets refresh it constantly.
MIN_KEY_TTL_SECONDS = 3600.0
#: BLPOP treats 0 as "block forever"; never ask for less than this.
MIN_BLOCK_SECONDS = 0.01

#: Position a script reports for a ticket that is no longer queued (its lease lapsed).
TICKET_GONE = -1

_LUA_PRELUDE = """
local queue, leases, seq = KEYS[1], KEYS[2], KEYS[3]
local wake_prefix, ttl = ARGV[1], tonumber(ARGV[2])

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function head()
  return redis.call('ZRANGE', queue, 0, 0)[1]
end

-- Tickets whose lease lapsed belong to crashed or stalled processes: drop them wherever
-- they stand, so neither a dead holder nor a dead waiter blocks the queue.
local function drop_lapsed(now)
  local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, token in ipairs(lapsed) do
    redis.call('ZREM', queue, token)
    redis.call('DEL', wake_prefix .. token)
  end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
end

-- Wakes the new head if the head changed (unless it is the caller, who learns from the
-- reply), then refreshes or deletes the queue's keys.
local function settle(old_head, caller)
  local new_head = head()
  if new_head and new_head ~= old_head and new_head ~= caller then
    local wake = wake_prefix .. new_head
    redis.call('RPUSH', wake, '1')
    redis.call('PEXPIRE', wake, ttl)
  end
  if new_head then
    redis.call('PEXPIRE', queue, ttl)
    redis.call('PEXPIRE', leases, ttl)
    redis.call('PEXPIRE', seq, ttl)
  else
    redis.call('DEL', queue, leases, seq)
  end
end

local function position(token)
  local rank = redis.call('ZRANK', queue, token)
  if rank then return rank end
  return -1
end
"""

#: ARGV: wake prefix, key ttl ms, token, lease ms -> {ticket number, position}
_ENQUEUE = LuaScript(
    _LUA_PRELUDE
    + """
local token, lease = ARGV[3], tonumber(ARGV[4])
local queued = redis.call('ZSCORE', queue, token)
if queued then
  -- A retry of an enqueue whose reply was lost: the ticket stands where it was.
  return {tonumber(queued), position(token)}
end
local now = now_ms()
local old_head = head()
drop_lapsed(now)
local number = redis.call('INCR', seq)
redis.call('ZADD', queue, number, token)
redis.call('ZADD', leases, now + lease, token)
settle(old_head, token)
return {number, position(token)}
"""
)

#: ARGV: wake prefix, key ttl ms, token, lease ms -> position (0 = holds the lock, -1 = gone).
#: Renews the ticket's lease: the keep-alive of holders and waiters alike.
_RENEW = LuaScript(
    _LUA_PRELUDE
    + """
local token, lease = ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local old_head = head()
drop_lapsed(now)
if redis.call('ZSCORE', queue, token) then
  redis.call('ZADD', leases, now + lease, token)
end
settle(old_head, token)
return position(token)
"""
)

#: ARGV: wake prefix, key ttl ms, token -> 1. Release by the holder and withdrawal by a waiter.
_LEAVE = LuaScript(
    _LUA_PRELUDE
    + """
local token = ARGV[3]
local now = now_ms()
local old_head = head()
redis.call('ZREM', queue, token)
redis.call('ZREM', leases, token)
redis.call('DEL', wake_prefix .. token)
drop_lapsed(now)
settle(old_head, token)
return 1
"""
)

#: ARGV: wake prefix, key ttl ms -> number of tickets whose lease is live.
_LIVE_TICKETS = LuaScript(
    _LUA_PRELUDE
    + """
return redis.call('ZCOUNT', leases, '(' .. now_ms(), '+inf')
"""
)


class LockWaitTimeout(LockError):
    """A turn waited longer than ``wait_timeout`` for its conversation's lock.

    Its ticket has left the queue; the turns behind it are not held up by it.
    """


@dataclass(frozen=True)
class FifoLockSettings:
    """Timing of the lock protocol; every replica of a deployment should use the same values.

    ``lease_seconds``: how long a ticket survives without renewal (renewed every third of it),
    so it bounds how long a crashed process blocks the conversation. ``wait_timeout``: how long
    a turn may wait before giving up with ``LockWaitTimeout``. ``recheck_interval``: the safety
    re-check of a waiter in case a wake-up was lost; not on the hand-off path.
    """

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    recheck_interval: float = DEFAULT_RECHECK_INTERVAL

    def __post_init__(self) -> None:
        for name in ("lease_seconds", "wait_timeout", "recheck_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"lock_store {name} must be a positive number, got {value!r}")
        if self.recheck_interval > MAX_RECHECK_INTERVAL:
            raise ConfigError(
                f"lock_store recheck_interval must be at most {MAX_RECHECK_INTERVAL} s, "
                f"got {self.recheck_interval!r}"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FifoLockSettings:
        """Settings from endpoints.yml keys; values may arrive as strings after ${ENV} expansion."""
        known = {"lease_seconds", "wait_timeout", "recheck_interval"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown lock_store option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = {}
        for name, raw in options.items():
            try:
                values[name] = float(raw)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"lock_store {name} must be a number, got {raw!r}") from error
        return cls(**values)

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease_seconds * 1000))

    @property
    def key_ttl_ms(self) -> int:
        return int(max(MIN_KEY_TTL_SECONDS, 3 * self.lease_seconds) * 1000)


@dataclass
class LockTurn:
    """What ``lock()`` yields: which ticket holds the conversation and how long it queued.

    ``lease_lost`` turns true if the lease lapsed while the turn ran (the process stalled or
    Redis was unreachable for a whole lease), i.e. another turn may have run concurrently.
    """

    conversation_id: str
    ticket: int
    waited_seconds: float
    lease_lost: bool = False


@dataclass(frozen=True)
class _TicketKeys:
    queue: str
    leases: str
    seq: str
    wake_prefix: str

    @classmethod
    def for_conversation(cls, conversation_id: str, namespace: str = "") -> _TicketKeys:
        def key(*parts: str) -> str:
            return conversation_key(conversation_id, "lock", *parts, namespace=namespace)

        return cls(
            queue=key("queue"), leases=key("leases"), seq=key("seq"), wake_prefix=key("wake") + ":"
        )

    @property
    def script_keys(self) -> List[str]:
        return [self.queue, self.leases, self.seq]


class _ArrivalOrder:
    """Lets one process's ``lock()`` calls for a conversation queue in Redis in call order.

    Redis numbers tickets in the order the enqueue scripts reach it, and calls made together
    send them on whichever pooled connection each gets: connections still being opened finish
    in any order, so the last message of a burst could be served first. Each call therefore
    takes its place in line here before its first await, and queues in Redis only once the
    call before it has its ticket. That costs one round trip per earlier call of the same burst
    and nothing otherwise; turns of other processes still queue in Redis's own order.
    """

    def __init__(self) -> None:
        #: Places of the calls queueing right now, per event loop (futures belong to one) and
        #: conversation; the first place is the call whose enqueue is under way.
        self._lines: Dict[Tuple[asyncio.AbstractEventLoop, str], Deque[asyncio.Future]] = {}

    @asynccontextmanager
    async def first_in_line(
        self, conversation_id: str, started: float, wait_timeout: float
    ) -> AsyncIterator[None]:
        """Waits until every earlier call for ``conversation_id`` has queued in Redis.

        Raises ``LockWaitTimeout`` once the turn, which began waiting at ``started``
        (``time.monotonic()``), has waited ``wait_timeout`` seconds: a Redis that stalls the
        first call does not hold the others past their wait bound.
        """
        loop = asyncio.get_running_loop()
        key = (loop, conversation_id)
        line = self._lines.setdefault(key, deque())
        place = loop.create_future()
        line.append(place)
        try:
            if line[0] is not place:
                remaining = started + wait_timeout - time.monotonic()
                await asyncio.wait([place], timeout=max(0.0, remaining))
                if not place.done():
                    raise LockWaitTimeout(
                        f"conversation {conversation_id}: waited "
                        f"{time.monotonic() - started:.1f} s (limit {wait_timeout:g} s) for "
                        f"earlier turns of this process to queue in Redis; this turn gave up"
                    )
            yield
        finally:
            was_first = line[0] is place
            line.remove(place)
            if not line:
                del self._lines[key]
            elif was_first:
                line[0].set_result(None)


def _unavailable(action: str, error: BaseException) -> StateUnavailable:
    return StateUnavailable(f"lock store: Redis unavailable while {action} ({error})")


class RedisFifoLockStore(LockStore):
    """Atomic FIFO ticket lock per conversation with fast hand-off and renewed leases.

    Only the async ``lock()`` context manager is supported: it is the one entry point Rasa's
    processor, agent and HTTP API use. The stock store's synchronous ticket methods
    (``issue_ticket``, ``get_lock``, …) describe a different protocol and raise
    ``NotImplementedError``.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        settings: Optional[FifoLockSettings] = None,
        endpoint_config: Optional[EndpointConfig] = None,
    ) -> None:
        """``url`` defaults to REDIS_URL; Rasa passes ``endpoint_config`` from endpoints.yml,
        whose options may include those of Rasa's ``RedisLockStore`` (see ``from_rasa_options``)."""
        options: Dict[str, Any] = {}
        namespace = None
        if endpoint_config is not None:
            url = endpoint_config.url or url
            timing = dict(endpoint_config.kwargs)
            options = {k: timing.pop(k) for k in RASA_CONNECTION_OPTIONS if k in timing}
            namespace = timing.pop("key_prefix", None)
            options["host"] = timing.pop("host", None)
            settings = FifoLockSettings.from_options(timing)
        self.url = url
        self.redis = from_rasa_options(os.environ, url=url, **options)
        self.namespace = check_namespace(namespace)
        check_access_at_start_up(self.redis)
        self.settings = settings or FifoLockSettings()
        self._arrivals = _ArrivalOrder()
        super().__init__()

    @asynccontextmanager
    async def lock(  # type: ignore[override]  # yields a LockTurn: Rasa never reads what it yields
        self,
        conversation_id: str,
        lock_lifetime: float = LOCK_LIFETIME,
        wait_time_in_seconds: float = 1,
    ) -> AsyncIterator[LockTurn]:
        """Hold ``conversation_id`` exclusively, after every turn that asked for it earlier.

        ``lock_lifetime`` and ``wait_time_in_seconds`` exist for signature compatibility with
        ``LockStore.lock`` and are not used: a fixed lifetime is what breaks long turns, and
        nothing here polls; ``FifoLockSettings`` governs both.

        Raises ``LockWaitTimeout`` after ``wait_timeout`` seconds of waiting, ``LockError`` if
        the waiting ticket's lease lapsed, ``StateUnavailable`` if Redis fails.
        """
        client = redis_client(self.redis)
        keys = _TicketKeys.for_conversation(conversation_id, self.namespace)
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        started = time.monotonic()
        sent = False
        try:
            async with self._arrivals.first_in_line(
                conversation_id, started, self.settings.wait_timeout
            ):
                sent = True
                number, position = await self._run(
                    client, _ENQUEUE, keys, [token, self.settings.lease_ms], "queueing a turn"
                )
        except asyncio.CancelledError:
            if sent:
                # Redis may have queued the ticket while its answer was still on its way: the
                # ticket is withdrawn, as a waiter cancelled later withdraws its own, rather
                # than left to hold the turns behind it for a lease.
                with contextlib.suppress(StateUnavailable):
                    await asyncio.shield(
                        self._run(client, _LEAVE, keys, [token], "withdrawing a ticket")
                    )
            raise
        turn = LockTurn(conversation_id, int(number), waited_seconds=0.0)
        leaving = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(client, keys, token, turn, leaving))
        completed = False
        try:
            await self._wait_for_turn(client, keys, token, int(position), started, turn)
            yield turn
            completed = True
        finally:
            leaving.set()
            keeper.cancel()
            await asyncio.wait([keeper])
            await self._leave(client, keys, token, turn, loud=completed)

    async def live_tickets(self, conversation_id: str) -> int:
        """Turns holding or waiting for ``conversation_id``'s lock (for health checks)."""
        client = redis_client(self.redis)
        keys = _TicketKeys.for_conversation(conversation_id, self.namespace)
        return int(await self._run(client, _LIVE_TICKETS, keys, [], "counting tickets"))

    async def _wait_for_turn(
        self,
        client: AnyRedis,
        keys: _TicketKeys,
        token: str,
        position: int,
        started: float,
        turn: LockTurn,
    ) -> None:
        deadline = started + self.settings.wait_timeout
        wake_key = keys.wake_prefix + token
        while position != 0:
            if position == TICKET_GONE:
                raise LockError(
                    f"conversation {turn.conversation_id}: ticket {turn.ticket} lapsed while "
                    f"waiting (not renewed for {self.settings.lease_seconds:g} s: the process "
                    f"stalled or Redis was unreachable)"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockWaitTimeout(
                    f"conversation {turn.conversation_id}: waited "
                    f"{time.monotonic() - started:.1f} s for the turn lock (limit "
                    f"{self.settings.wait_timeout:g} s) with {position} earlier turn(s) still "
                    f"ahead; this turn left the queue"
                )
            block = max(MIN_BLOCK_SECONDS, min(self.settings.recheck_interval, remaining))
            try:
                await client.blpop([wake_key], timeout=block)
            except REDIS_FAILURES as error:
                raise _unavailable("waiting for the turn lock", error) from error
            position = int(
                await self._run(
                    client, _RENEW, keys, [token, self.settings.lease_ms], "checking the queue"
                )
            )
        turn.waited_seconds = time.monotonic() - started
        LOCK_WAIT_SECONDS.observe(turn.waited_seconds)
        logger.debug(
            "conversation %s: ticket %d holds the lock after %.1f ms",
            turn.conversation_id,
            turn.ticket,
            turn.waited_seconds * 1000,
        )

    async def _keep_lease(
        self,
        client: AnyRedis,
        keys: _TicketKeys,
        token: str,
        turn: LockTurn,
        leaving: asyncio.Event,
    ) -> None:
        """Renews the ticket every third of a lease for as long as its ``lock()`` call lives.

        Stops on ``leaving`` as well as on cancellation: on Python 3.10 redis-py's
        ``asyncio.wait_for`` around socket writes can swallow a cancel that lands as the write
        completes, and a keeper that outlived its turn would hold the lock forever.
        """
        while not leaving.is_set():
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                position = await self._run(
                    client, _RENEW, keys, [token, self.settings.lease_ms], "renewing a lease"
                )
            except StateUnavailable as error:
                logger.warning("conversation %s: %s", turn.conversation_id, error)
                continue
            if position == TICKET_GONE:
                turn.lease_lost = True
                logger.error(
                    "conversation %s: the lease of ticket %d lapsed (not renewed for %g s); "
                    "another turn may run concurrently",
                    turn.conversation_id,
                    turn.ticket,
                    self.settings.lease_seconds,
                )
                return

    async def _leave(
        self, client: AnyRedis, keys: _TicketKeys, token: str, turn: LockTurn, loud: bool
    ) -> None:
        """Releases the lock or withdraws the waiting ticket, waking whoever is next.

        ``loud`` is false while another exception is already propagating: that one is the
        turn's real failure, and an unreachable Redis lets the lease lapse on its own.
        """
        try:
            await self._run(client, _LEAVE, keys, [token], "releasing the turn lock")
        except StateUnavailable as error:
            if loud:
                raise
            logger.error(
                "conversation %s: ticket %d not released, it lapses after %g s: %s",
                turn.conversation_id,
                turn.ticket,
                self.settings.lease_seconds,
                error,
            )

    async def _run(
        self,
        client: AnyRedis,
        script: LuaScript,
        keys: _TicketKeys,
        args: Sequence[Any],
        action: str,
    ) -> Any:
        try:
            return await script(
                client,
                keys=keys.script_keys,
                args=[keys.wake_prefix, self.settings.key_ttl_ms, *args],
            )
        except REDIS_FAILURES as error:
            raise _unavailable(action, error) from error

    def _unsupported(self, method: str) -> NoReturn:
        raise NotImplementedError(
            f"{type(self).__name__}.{method} is not supported: this store's tickets live in "
            f"Redis scripts; use `async with lock_store.lock(conversation_id)`"
        )

    def get_lock(self, conversation_id: str) -> NoReturn:
        self._unsupported("get_lock")

    def delete_lock(self, conversation_id: str) -> NoReturn:
        self._unsupported("delete_lock")

    def save_lock(self, lock: Any) -> NoReturn:
        self._unsupported("save_lock")

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME) -> NoReturn:
        self._unsupported("issue_ticket")

    def update_lock(self, conversation_id: str) -> NoReturn:
        self._unsupported("update_lock")

    def get_or_create_lock(self, conversation_id: str) -> NoReturn:
        self._unsupported("get_or_create_lock")

    def is_someone_waiting(self, conversation_id: str) -> NoReturn:
        self._unsupported("is_someone_waiting (use the async live_tickets)")

    def finish_serving(self, conversation_id: str, ticket_number: int) -> NoReturn:
        self._unsupported("finish_serving")

    def cleanup(self, conversation_id: str, ticket_number: int) -> NoReturn:
        self._unsupported("cleanup")
