"""Outbound items as records, and the queue that sends each once, at its time, from any replica.

An item (a notification, a callback) is a HASH ``omni:{<cid>}:outbound:item:<id>`` with its
``kind``, ``status``, the ``channel`` it went or goes on, the ``reason`` it was refused or held,
its ``due`` time, its ``payload`` (what the kind's courier needs) and ``outcome``. Its status
moves by explicit transitions (compare-and-set in one script):

``scheduled`` (waiting for ``due``: a later time, quiet hours, the global rate limit)
→ ``sending`` → ``sent`` | ``queued`` (waiting for the customer to open the chat) | ``failed``;
``scheduled`` → ``refused`` (with the reason) | ``cancelled``; ``queued`` → ``sent`` |
``cancelled``.

Indexes: ``omni:{<cid>}:outbound:items`` (the conversation's items by creation time),
``omni:outbound:due`` (scheduled items by due time, epoch ms, of the queue's clock) and
``omni:outbound:recent`` (every item by last change, the newest :data:`RECENT_KEPT`) for the
viewer; ``omni:outbound:refusals`` lists refusals that name no conversation (an unknown
customer). Every key expires :data:`KEEP_SECONDS` after its last change.

Exactly once: the send moment is leased work (:mod:`omnichannel.leases`, kind
:data:`OUTBOUND_SEND`, item id = the outbound item's). A replica claims a due item by recording
its work item (one replica wins), decides again at that moment (a STOP may have arrived, quiet
hours may have begun), moves it to ``sending`` and hands it to the kind's courier. A replica
killed at that moment leaves the lease to run out; another replica's sweeper takes it over and
calls the courier again with ``lease.taken_over`` set, which reconciles before it sends (an SMS
with Twilio's records, a chat message with the event log), so the customer gets it once. A
``sent`` item is final: a restart finds nothing due and re-sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from omnichannel import metrics
from omnichannel.leases import Existing, InFlightWork, Lease, takeover
from omnichannel.outbound.gate import OutboundGate, OutboundRequest
from omnichannel.outbound.policy import (
    CUSTOMER_RATE_LIMIT,
    GLOBAL_RATE_LIMIT,
    HOLD,
    REFUSE,
    Decision,
    OutboundPolicy,
)
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    StateUnavailable,
    conversation_key,
    global_key,
    redis_client,
)
from omnichannel.tasks import BackgroundTasks, cancellable

logger = logging.getLogger(__name__)

SCHEDULED = "scheduled"
SENDING = "sending"
SENT = "sent"
QUEUED = "queued"
FAILED = "failed"
REFUSED = "refused"
CANCELLED = "cancelled"
STATUSES = (SCHEDULED, SENDING, SENT, QUEUED, FAILED, REFUSED, CANCELLED)
FINAL = (SENT, FAILED, REFUSED, CANCELLED)

#: The leased work kind of the send moment (registered with the sweeper).
OUTBOUND_SEND = "outbound_send"
#: Items and their indexes are kept this long after their last change.
KEEP_SECONDS = 30 * 24 * 3600
#: The viewer's list of recent items is trimmed to this many.
RECENT_KEPT = 2000
REFUSALS_KEPT = 1000
#: Due items one poll takes, at most.
POLL_BATCH = 50

# KEYS: item, conversation index. ARGV: id, created ms, ttl, then field/value pairs.
# Returns 1 when created, 0 when an item with that id exists.
_CREATE = LuaScript(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: item. ARGV: allowed current statuses (comma separated), ttl, then field/value pairs
# (an empty value deletes the field). Returns 1 when moved, 0 when the status was another.
_TRANSITION = LuaScript(
    """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: index. ARGV: score, member, ttl, keep (0: no trim).
_INDEX = LuaScript(
    """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
end
return redis.call('EXPIRE', KEYS[1], ARGV[3])
"""
)

# KEYS: list. ARGV: entry, keep, ttl.
_LOG = LuaScript(
    """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return redis.call('EXPIRE', KEYS[1], ARGV[3])
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def new_item_id() -> str:
    return "o_" + secrets.token_urlsafe(12)


@dataclass
class OutboundItem:
    """One business-initiated item (see the module's docstring for its fields and statuses).
    ``source`` says who asked for it (``api``, ``customer``, ``agent``); ``consent_record``
    that the business sent its record of the customer's consent with the request;
    ``customer_requested`` that the customer asked for it (a callback)."""

    item_id: str
    kind: str
    conversation_id: str
    status: str = SCHEDULED
    channel: Optional[str] = None
    reason: Optional[str] = None
    due: Optional[float] = None
    created: float = 0.0
    updated: float = 0.0
    source: str = "api"
    consent_record: bool = False
    customer_requested: bool = False
    payload: Dict[str, Any] = field(default_factory=dict)
    outcome: Dict[str, Any] = field(default_factory=dict)

    def fields(self) -> Dict[str, str]:
        out = {
            "kind": self.kind,
            "status": self.status,
            "channel": self.channel or "",
            "reason": self.reason or "",
            "due": repr(self.due) if self.due is not None else "",
            "created": repr(self.created),
            "updated": repr(self.updated),
            "source": self.source,
            "consent_record": "1" if self.consent_record else "0",
            "customer_requested": "1" if self.customer_requested else "0",
            "payload": json.dumps(self.payload),
            "outcome": json.dumps(self.outcome),
        }
        return out

    @classmethod
    def from_fields(cls, conversation_id: str, item_id: str, raw: Dict[str, str]) -> OutboundItem:
        return cls(
            item_id=item_id,
            kind=raw.get("kind", ""),
            conversation_id=conversation_id,
            status=raw.get("status", ""),
            channel=raw.get("channel") or None,
            reason=raw.get("reason") or None,
            due=float(raw["due"]) if raw.get("due") else None,
            created=float(raw.get("created") or 0),
            updated=float(raw.get("updated") or 0),
            source=raw.get("source", "api"),
            consent_record=raw.get("consent_record") == "1",
            customer_requested=raw.get("customer_requested") == "1",
            payload=json.loads(raw.get("payload") or "{}"),
            outcome=json.loads(raw.get("outcome") or "{}"),
        )

    def as_dict(self) -> Dict[str, Any]:
        """The item as the viewer and the APIs show it (the payload is the caller's)."""
        return {
            "id": self.item_id,
            "kind": self.kind,
            "conversation_id": self.conversation_id,
            "status": self.status,
            "channel": self.channel,
            "reason": self.reason,
            "due": self.due,
            "created": self.created,
            "updated": self.updated,
            "source": self.source,
        }


class OutboundStore:
    """The items' records and indexes in Redis (see the module's docstring)."""

    def __init__(self, redis_url: Optional[str] = None) -> None:
        self.redis_url = redis_url

    @property
    def redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    @staticmethod
    def item_key(conversation_id: str, item_id: str) -> str:
        return conversation_key(conversation_id, "outbound", "item", item_id)

    @staticmethod
    def conversation_index(conversation_id: str) -> str:
        return conversation_key(conversation_id, "outbound", "items")

    DUE_KEY = global_key("outbound", "due")
    RECENT_KEY = global_key("outbound", "recent")
    REFUSALS_KEY = global_key("outbound", "refusals")

    @staticmethod
    def _member(conversation_id: str, item_id: str) -> str:
        return json.dumps([conversation_id, item_id])

    async def create(self, item: OutboundItem) -> bool:
        """Records a new item; False when one with its id exists."""
        args: List[Any] = [item.item_id, int(item.created * 1000), KEEP_SECONDS]
        for name, value in item.fields().items():
            if value != "":
                args += [name, value]
        created = await _CREATE(
            self.redis,
            [
                self.item_key(item.conversation_id, item.item_id),
                self.conversation_index(item.conversation_id),
            ],
            args,
        )
        if int(created):
            await self._touch(item.conversation_id, item.item_id, item.updated)
            if item.status == SCHEDULED and item.due is not None:
                await self.set_due(item.conversation_id, item.item_id, item.due)
        return bool(int(created))

    async def get(self, conversation_id: str, item_id: str) -> Optional[OutboundItem]:
        raw = await self.redis.hgetall(self.item_key(conversation_id, item_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return OutboundItem.from_fields(conversation_id, item_id, fields)

    async def transition(
        self,
        conversation_id: str,
        item_id: str,
        allowed: Sequence[str],
        *,
        now: float,
        **changes: Any,
    ) -> bool:
        """Sets ``changes`` (status, channel, reason, due, outcome…; None clears a field) when
        the item's status is one of ``allowed``; False otherwise."""
        args: List[Any] = [",".join(allowed), KEEP_SECONDS, "updated", repr(now)]
        for name, value in changes.items():
            if name == "outcome":
                value = json.dumps(value)
            elif name == "payload":
                value = json.dumps(value)
            elif name == "due" and value is not None:
                value = repr(value)
            args += [name, "" if value is None else str(value)]
        moved = await _TRANSITION(self.redis, [self.item_key(conversation_id, item_id)], args)
        if int(moved):
            await self._touch(conversation_id, item_id, now)
            status = changes.get("status")
            if status == SCHEDULED and changes.get("due") is not None:
                await self.set_due(conversation_id, item_id, float(changes["due"]))
            elif status is not None:
                await self.clear_due(conversation_id, item_id)
        return bool(int(moved))

    async def _touch(self, conversation_id: str, item_id: str, now: float) -> None:
        await _INDEX(
            self.redis,
            [self.RECENT_KEY],
            [int(now * 1000), self._member(conversation_id, item_id), KEEP_SECONDS, RECENT_KEPT],
        )

    async def set_due(self, conversation_id: str, item_id: str, due: float) -> None:
        await _INDEX(
            self.redis,
            [self.DUE_KEY],
            [int(due * 1000), self._member(conversation_id, item_id), KEEP_SECONDS, 0],
        )

    async def clear_due(self, conversation_id: str, item_id: str) -> None:
        await self.redis.zrem(self.DUE_KEY, self._member(conversation_id, item_id))

    async def due(self, now: float, limit: int = POLL_BATCH) -> List[Tuple[str, str]]:
        """(conversation id, item id) of scheduled items due at ``now``."""
        members = await self.redis.zrangebyscore(
            self.DUE_KEY, "-inf", int(now * 1000), start=0, num=limit
        )
        return [tuple(json.loads(_text(m))) for m in members]

    async def of_conversation(self, conversation_id: str, limit: int = 50) -> List[OutboundItem]:
        """The conversation's items, newest first."""
        ids = await self.redis.zrevrange(self.conversation_index(conversation_id), 0, limit - 1)
        items = [await self.get(conversation_id, _text(item_id)) for item_id in ids]
        return [item for item in items if item is not None]

    async def recent(self, limit: int = 100) -> List[OutboundItem]:
        """Every conversation's items, most recently changed first."""
        members = await self.redis.zrevrange(self.RECENT_KEY, 0, limit - 1)
        items = []
        for member in members:
            conversation_id, item_id = json.loads(_text(member))
            item = await self.get(conversation_id, item_id)
            if item is not None:
                items.append(item)
        return items

    async def log_refusal(self, kind: str, reason: str, now: float) -> None:
        """A refusal that names no conversation (an unknown customer): when, what, why."""
        entry = json.dumps({"at": now, "kind": kind, "reason": reason})
        await _LOG(self.redis, [self.REFUSALS_KEY], [entry, REFUSALS_KEPT, KEEP_SECONDS])

    async def refusals(self, limit: int = 100) -> List[Dict[str, Any]]:
        raw = await self.redis.lrange(self.REFUSALS_KEY, 0, limit - 1)
        return [json.loads(_text(entry)) for entry in raw]


@dataclass(frozen=True)
class Delivered:
    """What a courier did with an item: ``status`` (sent, queued, failed; or scheduled with
    ``retry_at`` to try again later), the ``channel`` it went on, ``detail`` to keep (SIDs, the
    route), and a short ``reason`` for anything but sent."""

    status: str
    channel: str
    detail: Dict[str, Any] = field(default_factory=dict)
    reason: Optional[str] = None
    retry_at: Optional[float] = None


class Courier(Protocol):
    """A kind's delivery: where an item would go now, and sending it there."""

    async def route(self, item: OutboundItem) -> str:
        """The channel kind the item goes on if sent now (the gate decides on it)."""

    async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
        """Sends ``item`` on ``channel``. Called again with ``lease.taken_over`` when a replica
        died at the send moment: reconcile (find what the dead one sent) before sending."""


class OutboundQueue:
    """Submits items (decided at once), sends due ones once (see the module's docstring).

    One per process: :meth:`start` registers the send work with this replica's sweeper and
    polls the due index every ``poll_seconds``. ``clock`` (epoch seconds) is the gate's.
    """

    def __init__(
        self,
        redis_url: Optional[str],
        gate: OutboundGate,
        *,
        poll_seconds: float = 1.0,
        **work_options: Any,
    ) -> None:
        self.store = OutboundStore(redis_url)
        self.gate = gate
        self.work = InFlightWork(redis_url or "", OUTBOUND_SEND, **work_options)
        self.poll_seconds = poll_seconds
        self.couriers: Dict[str, Courier] = {}
        self._poller = BackgroundTasks("outbound poller", in_flight=False)
        self._sends = BackgroundTasks("outbound sends")

    @property
    def clock(self) -> Callable[[], float]:
        return self.gate.clock

    def register(self, kind: str, courier: Courier) -> None:
        self.couriers[kind] = courier

    def start(self) -> None:
        """Sweeper registration and the due poller (idempotent)."""
        takeover().register(self.work, self._resume)
        if not len(self._poller):
            self._poller.start(self._poll_forever(), "poll due outbound items")

    async def stop(self) -> None:
        await self._poller.cancel_all()

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, item: OutboundItem, *, send_now: bool = True) -> OutboundItem:
        """Records ``item`` (status scheduled, due at ``item.due`` or now) and, when due, sends
        it at once (``send_now``) rather than at the next poll. Returns the item as it stands
        (sent, queued, held with the reason and time, refused with the reason). An item whose
        id exists is not recorded twice: the existing one is returned."""
        now = self.clock()
        item.created = item.updated = now
        item.status = SCHEDULED
        if item.due is None:
            item.due = now
        if not await self.store.create(item):
            found = await self.store.get(item.conversation_id, item.item_id)
            assert found is not None
            return found
        metrics.OUTBOUND_ITEMS.labels(
            kind=item.kind, channel=item.channel or "none", outcome=metrics.OUTBOUND_SCHEDULED
        ).inc()
        if send_now and item.due <= now:
            await self.dispatch(item.conversation_id, item.item_id)
        found = await self.store.get(item.conversation_id, item.item_id)
        return found or item

    async def cancel(self, conversation_id: str, item_id: str) -> bool:
        """Cancels a scheduled or queued item; False when it is sending or done."""
        cancelled = await self.store.transition(
            conversation_id,
            item_id,
            (SCHEDULED, QUEUED),
            now=self.clock(),
            status=CANCELLED,
            reason="cancelled",
        )
        if cancelled:
            await self._count(conversation_id, item_id, metrics.OUTBOUND_CANCELLED)
        return cancelled

    async def _count(self, conversation_id: str, item_id: str, outcome: str) -> None:
        item = await self.store.get(conversation_id, item_id)
        metrics.OUTBOUND_ITEMS.labels(
            kind=item.kind if item else "unknown",
            channel=(item.channel if item else None) or "none",
            outcome=outcome,
        ).inc()

    async def reschedule(self, conversation_id: str, item_id: str, due: float) -> bool:
        """Moves a scheduled item to ``due`` (epoch seconds)."""
        return await self.store.transition(
            conversation_id, item_id, (SCHEDULED,), now=self.clock(), status=SCHEDULED, due=due
        )

    async def refuse_unknown(self, kind: str, reason: str) -> None:
        """Records a refusal that names no conversation (counted, listed, no customer data)."""
        metrics.OUTBOUND_ITEMS.labels(
            kind=kind, channel="none", outcome=metrics.OUTBOUND_REFUSED
        ).inc()
        metrics.OUTBOUND_REFUSALS.labels(kind=kind, reason=reason).inc()
        await self.store.log_refusal(kind, reason, self.clock())

    # -- sending ------------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Sends the items due now; returns how many were looked at."""
        due = await self.store.due(self.clock())
        for conversation_id, item_id in due:
            await self.dispatch(conversation_id, item_id)
        return len(due)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await cancellable(self.poll_once())
            except REDIS_FAILURES as error:
                logger.warning("outbound poll failed: %s", type(error).__name__)

    async def dispatch(self, conversation_id: str, item_id: str) -> None:
        """Claims a due item's send (one replica wins) and runs it under the lease."""
        item = await self.store.get(conversation_id, item_id)
        if item is None or item.status != SCHEDULED:
            await self.store.clear_due(conversation_id, item_id)
            return
        if item.due is not None and item.due > self.clock():
            return
        if item.kind not in self.couriers:
            return  # a replica whose queue has the kind's courier sends it
        found = await self.work.record(conversation_id, item_id, {"kind": item.kind})
        if isinstance(found, Existing):
            # Another replica holds the send (its sweeper's business if it dies), or it is done.
            return
        async with self.work.held(found):
            await self._run(found)

    async def _resume(self, lease: Lease) -> None:
        await self._run(lease)

    async def _run(self, lease: Lease) -> None:
        cid, item_id = lease.conversation_id, lease.item_id
        item = await self.store.get(cid, item_id)
        if item is None or item.status in FINAL or item.status == QUEUED:
            await self.work.complete(lease, {"status": item.status if item else "gone"})
            await self.store.clear_due(cid, item_id)
            return
        courier = self.couriers.get(item.kind)
        if courier is None:
            logger.error("outbound %s: no courier for kind %s here", item_id, item.kind)
            # Left running: a replica that has the kind takes it over after the lease.
            return
        if item.status == SCHEDULED:
            channel = await courier.route(item)
            decision = await self.gate.decide(
                OutboundRequest(
                    cid,
                    item.kind,
                    channel,
                    customer_requested=item.customer_requested,
                    consent_record=item.consent_record,
                )
            )
            if decision.allowed:
                spent = await self.gate.limiter.take(cid, self.clock())
                if spent == "customer":
                    decision = Decision(REFUSE, CUSTOMER_RATE_LIMIT)
                elif spent == "global":
                    ends = (await self.gate.limiter.counts(cid, self.clock())).global_window_ends
                    decision = Decision(
                        HOLD, GLOBAL_RATE_LIMIT, datetime.fromtimestamp(ends, timezone.utc)
                    )
            if not decision.allowed:
                await self._not_now(item, lease, channel, decision)
                return
            if not await self.store.transition(
                cid,
                item_id,
                (SCHEDULED,),
                now=self.clock(),
                status=SENDING,
                channel=channel,
                reason=None,
            ):
                await self.work.complete(lease, {"status": "moved"})
                return
            item.status, item.channel = SENDING, channel
        channel = item.channel or "none"
        try:
            delivered = await courier.deliver(item, lease, channel)
        except (StateUnavailable, *REDIS_FAILURES):
            # Kept running: the lease lapses and a takeover reconciles, then finishes it.
            raise
        except Exception as error:  # a courier's bug must not leave the item sending for ever
            logger.exception("outbound %s: delivery failed", item_id)
            delivered = Delivered(FAILED, channel, reason=type(error).__name__)
        await self._finish(item, lease, delivered)

    async def _not_now(
        self, item: OutboundItem, lease: Lease, channel: str, decision: Decision
    ) -> None:
        now = self.clock()
        reason = decision.reason or "refused"
        metrics.OUTBOUND_REFUSALS.labels(kind=item.kind, reason=reason).inc()
        if decision.verdict == HOLD and decision.not_before is not None:
            due = decision.not_before.timestamp()
            await self.store.transition(
                item.conversation_id,
                item.item_id,
                (SCHEDULED,),
                now=now,
                status=SCHEDULED,
                due=due,
                reason=reason,
                channel=channel,
            )
            metrics.OUTBOUND_ITEMS.labels(
                kind=item.kind, channel=channel, outcome=metrics.OUTBOUND_HELD
            ).inc()
            logger.info("outbound %s held (%s) until %s", item.item_id, reason, decision.not_before)
            # The send is not claimed any more: the next claim records it afresh.
            await self._redis().delete(self.work.item_key(item.conversation_id, item.item_id))
            return
        await self.store.transition(
            item.conversation_id,
            item.item_id,
            (SCHEDULED,),
            now=now,
            status=REFUSED,
            reason=reason,
            channel=channel,
        )
        metrics.OUTBOUND_ITEMS.labels(
            kind=item.kind, channel=channel, outcome=metrics.OUTBOUND_REFUSED
        ).inc()
        logger.info("outbound %s refused: %s", item.item_id, reason)
        await self.work.complete(lease, {"refused": reason})

    def _redis(self) -> AnyRedis:
        return redis_client(self.store.redis_url)

    async def _finish(self, item: OutboundItem, lease: Lease, delivered: Delivered) -> None:
        now = self.clock()
        if delivered.status == SCHEDULED and delivered.retry_at is not None:
            # The courier could not send now (a vendor down): back to scheduled, retried later.
            await self.store.transition(
                item.conversation_id,
                item.item_id,
                (SENDING,),
                now=now,
                status=SCHEDULED,
                due=delivered.retry_at,
                reason=delivered.reason,
                outcome=delivered.detail,
            )
            await self._redis().delete(self.work.item_key(item.conversation_id, item.item_id))
            return
        await self.store.transition(
            item.conversation_id,
            item.item_id,
            (SENDING,),
            now=now,
            status=delivered.status,
            channel=delivered.channel,
            reason=delivered.reason,
            outcome=delivered.detail,
        )
        outcome = {
            SENT: metrics.OUTBOUND_SENT,
            QUEUED: metrics.OUTBOUND_QUEUED,
            REFUSED: metrics.OUTBOUND_REFUSED,
        }.get(delivered.status, metrics.OUTBOUND_FAILED)
        metrics.OUTBOUND_ITEMS.labels(
            kind=item.kind, channel=delivered.channel, outcome=outcome
        ).inc()
        if delivered.status == REFUSED and delivered.reason:
            metrics.OUTBOUND_REFUSALS.labels(kind=item.kind, reason=delivered.reason).inc()
        await self.work.complete(lease, {"status": delivered.status})

    async def shown(self, conversation_id: str, item_id: str) -> bool:
        """A queued item was shown to the customer (the chat opened): queued → sent."""
        moved = await self.store.transition(
            conversation_id, item_id, (QUEUED,), now=self.clock(), status=SENT
        )
        if moved:
            await self._count(conversation_id, item_id, metrics.OUTBOUND_SENT)
        return moved

    async def queued(self, conversation_id: str) -> List[OutboundItem]:
        """The conversation's items waiting for the chat to open, oldest first."""
        items = await self.store.of_conversation(conversation_id)
        return sorted((i for i in items if i.status == QUEUED), key=lambda i: i.created)


async def chat_opened(redis_url: Optional[str], conversation_id: str) -> int:
    """The customer opened the chat: the items queued for it (already in the conversation's
    history, which the chat shows now) count as sent. Returns how many."""
    store = OutboundStore(redis_url)
    shown = 0
    for item in await store.of_conversation(conversation_id):
        if item.status == QUEUED and await store.transition(
            conversation_id, item.item_id, (QUEUED,), now=time.time(), status=SENT
        ):
            metrics.OUTBOUND_ITEMS.labels(
                kind=item.kind, channel=item.channel or "chat", outcome=metrics.OUTBOUND_SENT
            ).inc()
            shown += 1
    return shown


#: The queue of each event loop (tests run several servers' code on separate loops).
_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OutboundQueue] = (
    weakref.WeakKeyDictionary()
)


def outbound_queue(redis_url: Optional[str] = None) -> OutboundQueue:
    """This process's queue (of the running event loop), made on first use with the policy of
    the ``OUTBOUND_*`` environment variables; every kind registers its courier on it."""
    loop = asyncio.get_running_loop()
    found = _queues.get(loop)
    if found is None:
        found = _queues[loop] = OutboundQueue(redis_url, OutboundGate(OutboundPolicy.from_env()))
    return found
