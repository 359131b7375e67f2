"""Callbacks by phone: each one's record and its transitions, in Redis, shared by the fleet.

A callback is promised to a customer ("we'll call you today at 15:00"), so it is state, not a
timer in one process: the record says where it is, and every change is one atomic transition on
it (a Lua script comparing the state it expects), so a "cancel my callback" racing the replica
that is dialling ends in exactly one of "cancelled" or "already calling you".

States (``state``)::

    scheduled ──claim (due)──► dialing ──placed──► placed ──in progress──► answered
        │  ▲                     │  │                 │                       │
        │  └──retry (VAPI down)──┘  └──failed/refused  └──ended──► completed | not_answered | failed
        ├──move──► scheduled (a new ``version``)
        └──cancel──► cancelled

``version`` counts the times the callback was scheduled (moves, retries): the durable work
item that dials it is named by callback id and version, so a moved callback is dialled once for
its new time and never for the old one.

Redis layout (every key under the conversation's hash tag, except the due index):

- ``omni:{<cid>}:callback:<id>`` HASH: ``state``, ``version``, ``due_at``, ``created_at``,
  ``updated_at``, ``requested_by`` (customer, agent, handoff), ``channel`` (where it was asked
  for), ``topic`` (the order number it is about, if any), ``call_id``, ``ended_reason``,
  ``reason`` (why it failed or was refused), ``attempts``. No phone number: the call goes to the
  conversation's verified number, read from the contact profile at dial time.
- ``omni:{<cid>}:callbacks`` LIST of the conversation's callback ids, newest first (at most
  ``KEPT_PER_CONVERSATION``), for the viewer.
- ``omni:{<cid>}:callback:open`` the id of the one callback not finished yet (a conversation
  has at most one: asking again moves it).
- ``omni:callbacks:due`` ZSET of ``[cid, id]`` scored by due time: a hint for the dialers (a
  member whose record is not scheduled at that time is dropped), so it needs no transaction
  with the records.

Every key expires ``KEEP_SECONDS`` after its last change (the due index after its newest
entry's due time plus that).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omnichannel.redis_client import LuaScript, RedisBacked, conversation_key, global_key

#: How long a callback's record is kept after its last change (the viewer shows it meanwhile).
KEEP_SECONDS = 30 * 24 * 3600
#: Callbacks listed per conversation.
KEPT_PER_CONVERSATION = 20
#: How many due callbacks one sweep reads.
DUE_BATCH = 50

SCHEDULED = "scheduled"
DIALING = "dialing"
PLACED = "placed"
ANSWERED = "answered"
COMPLETED = "completed"
NOT_ANSWERED = "not_answered"
FAILED = "failed"
REFUSED = "refused"
CANCELLED = "cancelled"
#: States a callback leaves no more.
FINAL = (COMPLETED, NOT_ANSWERED, FAILED, REFUSED, CANCELLED)
#: States of a callback not finished yet (the conversation's open one).
OPEN = (SCHEDULED, DIALING, PLACED, ANSWERED)

#: Who asked for it.
BY_CUSTOMER = "customer"
BY_AGENT = "agent"
BY_HANDOFF = "handoff"

_RENEW_ALL = """
local function keep(ttl)
  for i = 1, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
"""

# Creates a callback, or answers the open one. KEYS: record, list, open pointer.
# ARGV: id, keep seconds, max listed, n, n field/value pairs.
# Returns {1, id} when created, {0, open id} when the conversation has an open callback.
_CREATE = LuaScript(
    _RENEW_ALL
    + """
-- The pointer is deleted when its callback finishes (see _TRANSITION).
local open = redis.call('GET', KEYS[3])
if open then return {0, open} end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
keep(tonumber(ARGV[2]))
return {1, ARGV[1]}
"""
)

# One transition. KEYS: record, open pointer. ARGV: keep seconds, expected states (comma
# separated, '' = any), required version ('' = any), new state, bump version (1/0), final (1/0),
# then field/value pairs. Returns {1, version} when done, {0, current state or ''} when not.
_TRANSITION = LuaScript(
    _RENEW_ALL
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then
  return {0, state}
end
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '1')
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then return {0, state} end
if ARGV[5] == '1' then
  version = version + 1
  redis.call('HSET', KEYS[1], 'version', version)
end
redis.call('HSET', KEYS[1], 'state', ARGV[4])
for i = 7, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[6] == '1' then
  local id = string.match(KEYS[1], '([^:]+)$')
  if redis.call('GET', KEYS[2]) == id then redis.call('DEL', KEYS[2]) end
end
keep(tonumber(ARGV[1]))
return {1, version}
"""
)

# KEYS: due index. ARGV: score, member, keep seconds.
_INDEX = LuaScript(
    """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
)


def new_callback_id() -> str:
    return "cb_" + secrets.token_hex(8)


def _field(value: Any) -> str:
    """A hash field's value as stored ('' deletes the field)."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Callback:
    """One callback as stored."""

    callback_id: str
    conversation_id: str
    state: str
    version: int
    due_at: float
    created_at: float
    updated_at: float
    requested_by: str
    channel: str = ""
    topic: str = ""
    call_id: str = ""
    ended_reason: str = ""
    reason: str = ""
    attempts: int = 0
    #: The call's first words, written when it was requested ("You asked us to call about…").
    opening: str = ""
    #: When the current dial's ``POST /call`` began ('' before): a takeover reconciles.
    dial_started_at: str = ""

    @property
    def open(self) -> bool:
        return self.state in OPEN

    @property
    def work_id(self) -> str:
        """The durable work item that dials this version of the callback."""
        return f"{self.callback_id}.{self.version}"

    def as_dict(self) -> Dict[str, Any]:
        """For pages and APIs (no phone number is stored, so none is shown)."""
        return {
            "id": self.callback_id,
            "state": self.state,
            "due_at": self.due_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "requested_by": self.requested_by,
            "channel": self.channel,
            "topic": self.topic,
            "call_id": self.call_id,
            "ended_reason": self.ended_reason,
            "reason": self.reason,
            "attempts": self.attempts,
        }

    @classmethod
    def from_hash(cls, conversation_id: str, callback_id: str, raw: Dict[str, str]) -> Callback:
        return cls(
            callback_id=callback_id,
            conversation_id=conversation_id,
            state=raw.get("state", ""),
            version=int(raw.get("version") or 1),
            due_at=float(raw.get("due_at") or 0),
            created_at=float(raw.get("created_at") or 0),
            updated_at=float(raw.get("updated_at") or 0),
            requested_by=raw.get("requested_by", ""),
            channel=raw.get("channel", ""),
            topic=raw.get("topic", ""),
            call_id=raw.get("call_id", ""),
            ended_reason=raw.get("ended_reason", ""),
            reason=raw.get("reason", ""),
            attempts=int(raw.get("attempts") or 0),
            opening=raw.get("opening", ""),
            dial_started_at=raw.get("dial_started_at", ""),
        )


@dataclass(frozen=True)
class Transition:
    """What a transition found: ``done``, else the state that stopped it ('' = no record)."""

    done: bool
    state: str
    version: int = 0


class CallbackStore(RedisBacked):
    """The fleet's callbacks (see the module docstring)."""

    @staticmethod
    def record_key(conversation_id: str, callback_id: str) -> str:
        return conversation_key(conversation_id, "callback", callback_id)

    @staticmethod
    def list_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "callbacks")

    @staticmethod
    def open_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "callback", "open")

    @staticmethod
    def due_key() -> str:
        return global_key("callbacks", "due")

    @staticmethod
    def _member(conversation_id: str, callback_id: str) -> str:
        return json.dumps([conversation_id, callback_id])

    async def _index(self, callback: Callback) -> None:
        await _INDEX(
            self.redis,
            [self.due_key()],
            [
                callback.due_at,
                self._member(callback.conversation_id, callback.callback_id),
                int(max(0, callback.due_at - time.time())) + KEEP_SECONDS,
            ],
        )

    async def schedule(
        self,
        conversation_id: str,
        due_at: float,
        *,
        requested_by: str,
        channel: str = "",
        topic: str = "",
        opening: str = "",
        now: Optional[float] = None,
    ) -> Tuple[bool, Callback]:
        """A new callback due at ``due_at``: ``(True, it)``; or ``(False, the open one)`` when
        the conversation already has one (move that instead)."""
        now = time.time() if now is None else now
        callback_id = new_callback_id()
        fields = {
            "state": SCHEDULED,
            "version": "1",
            "due_at": repr(due_at),
            "created_at": repr(now),
            "updated_at": repr(now),
            "requested_by": requested_by,
            "channel": channel,
            "topic": topic,
            "opening": opening,
            "attempts": "0",
        }
        args: List[Any] = [callback_id, KEEP_SECONDS, KEPT_PER_CONVERSATION, len(fields)]
        for name, value in fields.items():
            args += [name, value]
        result = await _CREATE(
            self.redis,
            [
                self.record_key(conversation_id, callback_id),
                self.list_key(conversation_id),
                self.open_key(conversation_id),
            ],
            args,
        )
        if int(result[0]) == 1:
            created = await self.get(conversation_id, callback_id)
            assert created is not None
            await self._index(created)
            return True, created
        existing = await self.get(conversation_id, _text(result[1]))
        if existing is None:
            raise LookupError("the open callback vanished")
        return False, existing

    async def get(self, conversation_id: str, callback_id: str) -> Optional[Callback]:
        raw = await self.redis.hgetall(self.record_key(conversation_id, callback_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Callback.from_hash(conversation_id, callback_id, fields)

    async def open_callback(self, conversation_id: str) -> Optional[Callback]:
        """The conversation's callback not finished yet, if any."""
        found = await self.redis.get(self.open_key(conversation_id))
        if not found:
            return None
        callback = await self.get(conversation_id, _text(found))
        return callback if callback is not None and callback.open else None

    async def listed(self, conversation_id: str) -> List[Callback]:
        """The conversation's callbacks, newest first."""
        ids = await self.redis.lrange(self.list_key(conversation_id), 0, -1)
        found = []
        for callback_id in ids:
            callback = await self.get(conversation_id, _text(callback_id))
            if callback is not None:
                found.append(callback)
        return found

    async def transition(
        self,
        callback: Callback,
        to: str,
        *,
        expected: Sequence[str],
        same_version: bool = False,
        new_version: bool = False,
        fields: Optional[Dict[str, Any]] = None,
        now: Optional[float] = None,
    ) -> Transition:
        """Moves ``callback`` to ``to`` if it is in one of the ``expected`` states (and, with
        ``same_version``, still at its version); fields set ('' or None deletes one)."""
        now = time.time() if now is None else now
        values = {"updated_at": repr(now), **(fields or {})}
        args: List[Any] = [
            KEEP_SECONDS,
            ",".join(expected),
            str(callback.version) if same_version else "",
            to,
            "1" if new_version else "0",
            "1" if to in FINAL else "0",
        ]
        for name, value in values.items():
            args += [name, _field(value)]
        result = await _TRANSITION(
            self.redis,
            [
                self.record_key(callback.conversation_id, callback.callback_id),
                self.open_key(callback.conversation_id),
            ],
            args,
        )
        if int(result[0]) == 1:
            return Transition(True, to, int(result[1]))
        return Transition(False, _text(result[1]))

    async def move(self, callback: Callback, due_at: float) -> Transition:
        """A scheduled callback, due at another time (a new version: the old one is not
        dialled)."""
        moved = await self.transition(
            callback, SCHEDULED, expected=[SCHEDULED], new_version=True, fields={"due_at": due_at}
        )
        if moved.done:
            await self._index(
                Callback(**{**callback.__dict__, "due_at": due_at, "version": moved.version})
            )
        return moved

    async def cancel(self, callback: Callback, reason: str = "") -> Transition:
        return await self.transition(
            callback, CANCELLED, expected=[SCHEDULED], fields={"reason": reason}
        )

    async def due(self, now: float, limit: int = DUE_BATCH) -> List[Tuple[str, str]]:
        """(conversation id, callback id) of entries due by ``now`` (a hint: the record decides)."""
        members = await self.redis.zrangebyscore(self.due_key(), "-inf", now, start=0, num=limit)
        return [tuple(json.loads(_text(m))) for m in members]  # type: ignore[misc]

    async def unindex(self, conversation_id: str, callback_id: str) -> None:
        await self.redis.zrem(self.due_key(), self._member(conversation_id, callback_id))

    async def reindex(self, callback: Callback) -> None:
        await self._index(callback)
