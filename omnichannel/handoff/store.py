"""The hand-offs of the whole fleet, in Redis: one record per conversation, changed only by
atomic compare-and-set, so a claim is won by exactly one agent whichever replicas they reach.

Keys (every one expires):

- ``omni:{<cid>}:handoff`` (HASH, the conversation's slot): ``id``, ``version``, ``state`` and
  ``record`` (the :class:`~omnichannel.handoff.state.Handoff` as JSON). Kept ``open_ttl``
  after its last change while open, ``closed_ttl`` once closed (agents still see how it ended).
- ``omni:{<cid>}:handoff:notes`` (LIST): agents' internal notes (JSON), expiring with the
  record. The customer never sees them: they are not in the event log and are published only
  on the fleet's hand-off channel (never on the conversation's, which customers' chat sockets
  read), so no channel, history page or LLM prompt can carry them.
- ``omni:handoffs:desks`` (HASH): each agent desk served by some replica (``inbox``, a
  helpdesk) → when a replica last said so; expires unless renewed.
- ``omni:handoffs:queued`` / ``omni:handoffs:claimed`` (ZSET, own slots): the open hand-offs by
  request / claim time, for the inbox's queue; ``omni:handoffs:due`` (ZSET): queued ones by their
  next deadline, for the sweeper. They are hints, like the leases' index: the record decides,
  and members whose record says otherwise are dropped when met. A script cannot span slots, so
  they are updated after the record, and an index entry is added *before* a record that needs
  it is created (a record is never missing from the index it belongs to; at worst the index
  holds a stale member).

Each change is also PUBLISHed, in the same script, on the conversation's live channel
(``omni:{<cid>}:live``, where the tracker store publishes its events, so a page watching the
conversation sees the hand-off move in order with its messages) and on the fleet's hand-off
channel (``omni:{~handoffs}:live``, the inbox's queue), as ``{"event": "handoff", "handoff": …}``;
a note as ``{"event": "handoff_note", "conversation_id": …, "note": …}`` on the fleet's only.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from omnichannel.handoff.state import (
    CLAIMED,
    OPEN_STATES,
    QUEUED,
    Handoff,
    TransitionRefused,
)
from omnichannel.redis_client import AnyRedis, LuaScript, conversation_key, global_key, redis_client

#: The pseudo-conversation whose live channel carries every hand-off change (no real
#: conversation id starts with "~").
FLEET_FEED = "~handoffs"
DEFAULT_OPEN_TTL = 14 * 24 * 3600
DEFAULT_CLOSED_TTL = 3 * 24 * 3600
#: The indexes outlive any record in them; each write renews them.
INDEX_TTL = 30 * 24 * 3600
#: Notes kept per conversation (the oldest go).
MAX_NOTES = 200
#: How many times a change is recomputed when the record moved under it (another replica).
MAX_ATTEMPTS = 5
#: A desk (the inbox, a helpdesk) counts as answering while a replica serving it said so
#: within this long (:meth:`HandoffStore.heartbeat`): the bot promises a person only then.
DESK_ALIVE_SECONDS = 60

_OPEN = "{" + ",".join(f"['{state}']=true" for state in sorted(OPEN_STATES)) + "}"

# Creates a hand-off unless one is open. KEYS: record, conversation live channel is in ARGV.
# ARGV: id, version, state, record json, ttl seconds, conversation channel, fleet channel,
# message. Returns {1} when created, {0, record json} with the open one otherwise.
_REQUEST = LuaScript(
    f"""
local open = {_OPEN}
local found = redis.call('HMGET', KEYS[1], 'state', 'record')
if found[1] and open[found[1]] then return {{0, found[2]}} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'version', ARGV[2], 'state', ARGV[3], 'record', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[8])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {{1}}
"""
)

# Replaces the record if it is still the one the change was computed from.
# KEYS: record, notes. ARGV: expected id, expected version, new version, new state, record
# json, ttl seconds, conversation channel, fleet channel, message.
# Returns {1} when saved, {0, record json or ''} otherwise.
_SAVE = LuaScript(
    """
local found = redis.call('HMGET', KEYS[1], 'id', 'version', 'record')
if found[1] ~= ARGV[1] or found[2] ~= ARGV[2] then return {0, found[3] or ''} end
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'state', ARGV[4], 'record', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
redis.call('PUBLISH', ARGV[7], ARGV[9])
redis.call('PUBLISH', ARGV[8], ARGV[9])
return {1}
"""
)

# KEYS: notes, record. ARGV: note json, max notes, ttl seconds, fleet channel, message.
_NOTE = LuaScript(
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
local ttl = redis.call('TTL', KEYS[2])
if ttl < 0 then ttl = tonumber(ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def live_channel(conversation_id: str) -> str:
    """A conversation's live channel (the tracker store publishes its events there too)."""
    return conversation_key(conversation_id, "live")


class StaleHandoff(TransitionRefused):
    """The hand-off changed (or ended) while a change to it was being made; the message says
    what it is now."""


class HandoffStore:
    """Reads and changes hand-off records (see the module docstring)."""

    def __init__(
        self,
        redis_url: Optional[str] = None,
        *,
        open_ttl: int = DEFAULT_OPEN_TTL,
        closed_ttl: int = DEFAULT_CLOSED_TTL,
    ) -> None:
        self.redis_url = redis_url
        self.open_ttl = open_ttl
        self.closed_ttl = closed_ttl

    def _redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    @staticmethod
    def record_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "handoff")

    @staticmethod
    def notes_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "handoff", "notes")

    @staticmethod
    def index_key(name: str) -> str:
        return global_key("handoffs", name)

    def _ttl(self, handoff: Handoff) -> int:
        return self.open_ttl if handoff.is_open else self.closed_ttl

    @staticmethod
    def _message(handoff: Handoff) -> str:
        return json.dumps(
            {"event": "handoff", "timestamp": time.time(), "handoff": handoff.as_dict()}
        )

    # -- reading ----------------------------------------------------------------------------

    async def get(self, conversation_id: str) -> Optional[Handoff]:
        """The conversation's latest hand-off (open, or closed within ``closed_ttl``)."""
        raw = await self._redis().hget(self.record_key(conversation_id), "record")
        return Handoff.from_dict(json.loads(raw)) if raw else None

    async def many(self, conversation_ids: Sequence[str]) -> Dict[str, Handoff]:
        """The records of several conversations (each key in its own slot: one read each)."""
        found: Dict[str, Handoff] = {}
        for conversation_id in conversation_ids:
            handoff = await self.get(conversation_id)
            if handoff is not None:
                found[conversation_id] = handoff
        return found

    async def open_handoffs(self, limit: int) -> List[Handoff]:
        """Open hand-offs, queued ones first (oldest first), then claimed ones (oldest claim
        first), at most ``limit``; index members whose record is not open any more are
        dropped on the way."""
        result: List[Handoff] = []
        for state in (QUEUED, CLAIMED):
            index = self.index_key(state)
            members = await self._redis().zrange(index, 0, max(0, limit - len(result)) - 1)
            for member in members:
                conversation_id = _text(member)
                handoff = await self.get(conversation_id)
                if handoff is None or handoff.state != state:
                    await self._redis().zrem(index, conversation_id)
                    continue
                result.append(handoff)
            if len(result) >= limit:
                break
        return result

    async def depth(self) -> Dict[str, int]:
        """Open hand-offs per state, fleet-wide, as the indexes count them."""
        return {
            state: int(await self._redis().zcard(self.index_key(state)))
            for state in (QUEUED, CLAIMED)
        }

    async def due(self, now: float, limit: int = 50) -> List[str]:
        """Conversations whose queued hand-off has a deadline at or before ``now``."""
        members = await self._redis().zrangebyscore(
            self.index_key("due"), "-inf", int(now * 1000), start=0, num=limit
        )
        return [_text(member) for member in members]

    # -- changing ---------------------------------------------------------------------------

    async def reindex(self, handoff: Handoff) -> None:
        """Puts the hand-off in the indexes its state needs and out of the others."""
        client = self._redis()
        cid = handoff.conversation_id
        wanted = {
            QUEUED: handoff.requested_at if handoff.state == QUEUED else None,
            CLAIMED: (handoff.claimed_at or handoff.requested_at)
            if handoff.state == CLAIMED
            else None,
            "due": handoff.next_deadline(),
        }
        for name, score in wanted.items():
            key = self.index_key(name)
            if score is None:
                await client.zrem(key, cid)
            else:
                await client.zadd(key, {cid: int(score * 1000)})
                await client.expire(key, INDEX_TTL)

    async def request(self, handoff: Handoff) -> Tuple[Handoff, bool]:
        """Records a new hand-off unless the conversation has an open one: returns the open
        hand-off and whether it is the new one."""
        if handoff.is_open:
            # In the index before the record exists: never a record the queue cannot find.
            await self.reindex(handoff)
        result = await _REQUEST(
            self._redis(),
            [self.record_key(handoff.conversation_id)],
            [
                handoff.id,
                handoff.version,
                handoff.state,
                json.dumps(handoff.as_dict()),
                self._ttl(handoff),
                live_channel(handoff.conversation_id),
                live_channel(FLEET_FEED),
                self._message(handoff),
            ],
        )
        if int(result[0]) == 1:
            return handoff, True
        existing = Handoff.from_dict(json.loads(_text(result[1])))
        if handoff.is_open:
            await self.reindex(existing)
        return existing, False

    async def save(self, before: Handoff, after: Handoff) -> None:
        """Stores ``after`` if the record is still ``before``; raises StaleHandoff otherwise."""
        if after is before:
            return
        if after.is_open:
            await self.reindex(after)
        result = await _SAVE(
            self._redis(),
            [self.record_key(before.conversation_id), self.notes_key(before.conversation_id)],
            [
                before.id,
                before.version,
                after.version,
                after.state,
                json.dumps(after.as_dict()),
                self._ttl(after),
                live_channel(after.conversation_id),
                live_channel(FLEET_FEED),
                self._message(after),
            ],
        )
        if int(result[0]) != 1:
            raw = _text(result[1])
            now = Handoff.from_dict(json.loads(raw)) if raw else None
            if now is not None:
                await self.reindex(now)
            raise StaleHandoff(
                "the hand-off changed meanwhile"
                + (f": it is {now.state} now" if now is not None else ": it is gone")
            )
        if not after.is_open:
            await self.reindex(after)

    async def update(
        self, conversation_id: str, change: Callable[[Handoff], Handoff]
    ) -> Tuple[Handoff, Handoff]:
        """Applies ``change`` (a transition of :class:`Handoff`) to the conversation's hand-off
        atomically, recomputing it when another replica moved the record first; returns
        ``(before, after)``. Raises TransitionRefused (the change does not apply to the
        hand-off as it is now) or LookupError (there is none)."""
        for _ in range(MAX_ATTEMPTS):
            before = await self.get(conversation_id)
            if before is None:
                raise LookupError("this conversation has no hand-off")
            after = change(before)
            try:
                await self.save(before, after)
            except StaleHandoff:
                continue
            return before, after
        raise StaleHandoff("the hand-off kept changing; try again")

    async def unindex(self, conversation_id: str) -> None:
        """Takes a conversation out of every index (its record is gone)."""
        for name in (QUEUED, CLAIMED, "due"):
            await self._redis().zrem(self.index_key(name), conversation_id)

    async def announce(self, conversation_id: str, event: str, **details: Any) -> None:
        """Tells agents' pages something happened in a conversation that is not a change of its
        record (``handoff_activity``: the customer wrote; ``handoff_message``: a message to the
        customer was sent or failed), on the fleet's hand-off channel."""
        message = {"event": event, "timestamp": time.time(), "conversation_id": conversation_id}
        await self._redis().publish(live_channel(FLEET_FEED), json.dumps({**message, **details}))

    async def forget(self, conversation_id: str) -> None:
        """Drops a conversation's hand-off and notes (identity erasure)."""
        await self._redis().delete(
            self.record_key(conversation_id), self.notes_key(conversation_id)
        )
        await self.unindex(conversation_id)

    # -- the agent side's presence --------------------------------------------------------

    async def heartbeat(self, desk: str, now: float) -> None:
        """A replica serving ``desk`` is up (renewed every few seconds by its sweeper)."""
        client = self._redis()
        key = self.index_key("desks")
        await client.hset(key, desk, int(now * 1000))
        await client.expire(key, 2 * DESK_ALIVE_SECONDS)

    async def desks_alive(self, now: float) -> List[str]:
        """The desks some replica served within DESK_ALIVE_SECONDS: where people can answer."""
        raw = await self._redis().hgetall(self.index_key("desks"))
        cutoff = (now - DESK_ALIVE_SECONDS) * 1000
        return sorted(_text(desk) for desk, seen in raw.items() if int(seen) >= cutoff)

    # -- notes ------------------------------------------------------------------------------

    async def add_note(self, conversation_id: str, note: Dict[str, Any]) -> None:
        """Keeps an agent's internal note with the conversation (and tells agents' pages)."""
        await _NOTE(
            self._redis(),
            [self.notes_key(conversation_id), self.record_key(conversation_id)],
            [
                json.dumps(note),
                MAX_NOTES,
                self.open_ttl,
                live_channel(FLEET_FEED),
                json.dumps(
                    {
                        "event": "handoff_note",
                        "timestamp": note.get("at"),
                        "conversation_id": conversation_id,
                        "note": note,
                    }
                ),
            ],
        )

    async def notes(self, conversation_id: str) -> List[Dict[str, Any]]:
        raw = await self._redis().lrange(self.notes_key(conversation_id), 0, -1)
        return [json.loads(item) for item in raw]
