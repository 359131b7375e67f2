"""A call's state and its turns' answers, in Redis, shared by every replica.

Keys (all under the conversation's hash tag, so every script stays in one Cluster slot):

- ``omni:{cid}:work:voice_turn:<turn id>`` (turn id: a hash of call id, ordinal, text): the
  turn's answer record, an in-flight item of :mod:`omnichannel.leases` (kind ``voice_turn``),
  kept 1 h. The first request of a turn records it, ``running`` under a short lease its replica
  renews while the turn runs, with the turn as payload; done, it holds the answer (outcome
  ``{state: done|superseded, request, spoken}``). A duplicate replays the answer; finding the
  turn running with its lease run out (the replica died), it takes the turn over. It is the one
  record that says a turn runs.
- ``omni:{cid}:vapi:report:<hash of call id>``: STRING, set once the call's end-of-call report
  is stored (30 days), so a retried or replayed report is not applied twice.
- ``omni:{cid}:vapi:call:<hash of call id>``: HASH, 6 h after its last write:
  ``inflight`` (the turn being answered: request, ordinal, text, message_id, turn_id),
  ``last_sent`` (what the last finished turn said: ordinal, first_ordinal, text, at),
  ``interrupted_at`` (VAPI's last ``user-interrupted``) and ``superseded:<request id>`` (tells
  the replica running that request to stop it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

from connectors.turns.durable import DurableTurns
from connectors.vapi.voice_turn import VoiceTurn
from omnichannel.channels import VOICE
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    StateUnavailable,
    conversation_key,
    redis_client,
)

logger = logging.getLogger(__name__)

ANSWER_TTL_SECONDS = 3600
#: The in-flight kind of a voice turn (omnichannel/leases.py).
VOICE_TURN = "voice_turn"
#: How long a running turn stays with a replica that stopped renewing it (renewed every third):
#: a re-POST finding the turn's replica dead waits about this long before taking it over.
DEFAULT_TURN_LEASE_SECONDS = 3.0
CALL_STATE_TTL_SECONDS = 6 * 3600
#: How long a call's end-of-call report is remembered as stored: VAPI retries for minutes, a
#: replay of a captured request may come any time, and the record is a few bytes.
REPORT_TTL_SECONDS = 30 * 24 * 3600

# Makes a claimed turn the call's one in flight; returns the call's state as it was.
# KEYS: call state key. ARGV: inflight json, call ttl.
_IN_FLIGHT = LuaScript(
    """
local state = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'inflight', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return state
"""
)

# If the finished turn is still the call's one in flight, records what it sent (for barge-in
# detection on the next turn). Removing ``inflight`` can delete the hash (it was its only field)
# and with it the expiry, so the expiry is set again after ``last_sent``. Idempotent: a replica
# finishing a turn a dead one had finished here does nothing more.
# KEYS: call state key. ARGV: request id, last_sent json, call ttl.
_FINISH = LuaScript(
    """
local inflight = redis.call('HGET', KEYS[1], 'inflight')
if inflight and cjson.decode(inflight)['request'] == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'inflight')
  redis.call('HSET', KEYS[1], 'last_sent', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""
)


# Sets one field of a call's hash and renews its expiry (a script: one slot, one round trip).
# KEYS: the call hash. ARGV: field, value, ttl seconds.
_SET_FIELD = LuaScript(
    """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('EXPIRE', KEYS[1], ARGV[3])
"""
)


def report_key(conversation_id: str, call_id: str) -> str:
    digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:32]
    return conversation_key(conversation_id, "vapi", "report", digest)


def call_key(conversation_id: str, call_id: str) -> str:
    digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:32]
    return conversation_key(conversation_id, "vapi", "call", digest)


def turn_id(call_id: str, ordinal: int, text: str) -> str:
    """The id of a turn's answer record: duplicates of a request share it."""
    return hashlib.sha256(f"{call_id}\n{ordinal}\n{text}".encode()).hexdigest()[:32]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _json_field(fields: Dict[str, str], name: str) -> Optional[Dict[str, Any]]:
    return json.loads(fields[name]) if name in fields else None


@dataclass(frozen=True)
class CallSnapshot:
    """The call's state as a claiming turn found it."""

    in_flight: Optional[Dict[str, Any]]
    last_sent: Optional[Dict[str, Any]]
    interrupted_at: float


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a turn: ``call`` and ``lease`` when it is ours to answer, else
    ``answer``, the record of the request that claimed it first."""

    call: Optional[CallSnapshot] = None
    lease: Optional[Lease] = None
    answer: Optional[Dict[str, Any]] = None


def _unavailable(doing: str, error: Exception) -> StateUnavailable:
    return StateUnavailable(f"{doing}: Redis unavailable ({type(error).__name__})")


class CallStore:
    """The call state and answer records of every VAPI call, in the Redis at ``redis_url``."""

    def __init__(self, redis_url: str, lease_seconds: float = DEFAULT_TURN_LEASE_SECONDS) -> None:
        self.redis_url = redis_url
        #: The turns' answer records, leased to the replica running each (see the module).
        self.turns = DurableTurns(
            InFlightWork(
                redis_url, VOICE_TURN, lease_seconds=lease_seconds, keep_seconds=ANSWER_TTL_SECONDS
            ),
            VOICE,
        )

    def _redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    async def claim(self, turn: VoiceTurn) -> Claim:
        """Claim ``turn`` and make it the call's turn in flight, unless a request claimed it
        first. Raises StateUnavailable.

        Should the replica die between the two steps, the turn is recorded and not in flight:
        it is taken over once its lease runs out, as any other turn left running."""
        try:
            recorded = await self.turns.accept(turn.conversation_id, turn.turn_id, turn.payload())
        except REDIS_FAILURES as error:
            raise _unavailable("claiming a voice turn", error) from error
        if isinstance(recorded, Existing):
            return Claim(answer=recorded.outcome or {"state": recorded.state})
        in_flight = {
            "request": turn.request_id,
            "ordinal": turn.ordinal,
            "text": turn.last_text,
            "message_id": turn.message_id,
            "turn_id": turn.turn_id,
        }
        try:
            result = await _IN_FLIGHT(
                self._redis(), [turn.call_key], [json.dumps(in_flight), CALL_STATE_TTL_SECONDS]
            )
        except REDIS_FAILURES as error:
            raise _unavailable("claiming a voice turn", error) from error
        fields = {_text(k): _text(v) for k, v in zip(result[::2], result[1::2], strict=True)}
        return Claim(
            call=CallSnapshot(
                in_flight=_json_field(fields, "inflight"),
                last_sent=_json_field(fields, "last_sent"),
                interrupted_at=float(fields.get("interrupted_at") or 0),
            ),
            lease=recorded,
        )

    async def prepare(self, lease: Lease, turn: VoiceTurn) -> None:
        """Records the turn as it will run (its utterance, the turn it supersedes, barge-in),
        so a replica taking it over runs the same. Not fatal when Redis fails: a takeover then
        answers the last user message alone. Most turns are as claimed (one user message, no
        barge-in, nothing superseded): Redis is then left alone."""
        payload = turn.payload()
        if payload == lease.payload:
            return
        try:
            await self.turns.update(lease, payload)
        except REDIS_FAILURES as error:
            logger.warning("call %s: turn not prepared: %s", turn.call_id, type(error).__name__)

    async def answer(self, conversation_id: str, turn_id: str) -> Dict[str, Any]:
        """A turn's answer record: ``{state: running}`` while it runs, else its answer (an
        expired one counts as done, with nothing said). Raises StateUnavailable."""
        try:
            record = await self.turns.state(conversation_id, turn_id)
        except REDIS_FAILURES as error:
            raise _unavailable("reading a voice turn's answer", error) from error
        if not record:
            return {"state": "done", "spoken": []}
        if record.get("state") == "running":
            return {"state": "running"}
        return json.loads(record.get("outcome") or "{}") or {"state": "done", "spoken": []}

    async def take_over(self, conversation_id: str, turn_id: str) -> Optional[Lease]:
        """The turn, leased to this replica, when its replica stopped renewing its lease; None
        while the lease holds or once the turn is done. Raises StateUnavailable."""
        try:
            return await self.turns.take_over(conversation_id, turn_id)
        except REDIS_FAILURES as error:
            raise _unavailable("taking a voice turn over", error) from error

    async def finish(self, lease: Lease, turn: VoiceTurn) -> bool:
        """Stores a turn's answer (for duplicates) and, unless it was superseded, what it sent
        (for barge-in detection); True when this replica's answer is the one recorded.

        The answer goes last: until it is recorded the turn counts as running, and a replica
        taking it over finds the event log (and the call state) as this one left it. Failures
        are logged: the caller has heard the answer already, and a turn left running is taken
        over and recorded by another replica."""
        record = {
            "state": "superseded" if turn.superseded else "done",
            "request": turn.request_id,
            "spoken": [] if turn.superseded else turn.spoken,
        }
        last_sent = {
            "ordinal": turn.ordinal,
            "first_ordinal": turn.first_ordinal,
            "text": turn.sent_text,
            "at": turn.started_at,
        }
        try:
            if not turn.superseded:
                await _FINISH(
                    self._redis(),
                    [turn.call_key],
                    [turn.request_id, json.dumps(last_sent), CALL_STATE_TTL_SECONDS],
                )
        except REDIS_FAILURES as error:
            logger.error("call %s: could not store the turn's answer: %s", turn.call_id, error)
            return False
        return await self.turns.complete(lease, record)

    async def mark_superseded(self, key: str, request_id: str) -> None:
        """Tells the superseded turn's replica to stop it. Not fatal when Redis fails: the new
        turn still reverts the old one under the lock, only its stream may run on."""
        try:
            await self._set_field(key, f"superseded:{request_id}", "1")
        except REDIS_FAILURES as error:
            logger.warning("could not mark a superseded voice turn: %s", type(error).__name__)

    async def is_superseded(self, turn: VoiceTurn) -> bool:
        """True once a request (on any replica) superseded ``turn``. Raises StateUnavailable."""
        try:
            return bool(await self._redis().hexists(turn.call_key, f"superseded:{turn.request_id}"))
        except REDIS_FAILURES as error:
            raise StateUnavailable(
                f"call state: Redis unavailable ({type(error).__name__})"
            ) from error

    async def claim_report(self, conversation_id: str, call_id: str) -> bool:
        """True for the first end-of-call report of a call; a retry or a replay gets False."""
        key = report_key(conversation_id, call_id)
        return bool(await self._redis().set(key, "1", nx=True, ex=REPORT_TTL_SECONDS))

    async def release_report(self, conversation_id: str, call_id: str) -> None:
        """Lets VAPI's retry store a report whose storing failed."""
        await self._redis().delete(report_key(conversation_id, call_id))

    async def record_interruption(self, conversation_id: str, call_id: str, at: float) -> None:
        """VAPI reported the caller talking over the bot (``user-interrupted``) at ``at``."""
        await self._set_field(call_key(conversation_id, call_id), "interrupted_at", repr(at))

    async def _set_field(self, key: str, name: str, value: str) -> None:
        await _SET_FIELD(self._redis(), [key], [name, value, CALL_STATE_TTL_SECONDS])
