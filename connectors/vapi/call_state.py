"""A call's state and its turns' answers, in Redis, shared by every replica.

Keys (all under the conversation's hash tag, so every script stays in one Cluster slot):

- ``omni:{cid}:vapi:turn:<hash of call id, ordinal, text>``: STRING, the answer of one turn
  (JSON ``{state: running|done|superseded, request, spoken}``), 1 h. The first request of a turn
  claims it; a duplicate replays it.
- ``omni:{cid}:vapi:report:<hash of call id>``: STRING, set once the call's end-of-call report
  is stored (30 days), so a retried or replayed report is not applied twice.
- ``omni:{cid}:vapi:call:<hash of call id>``: HASH, 6 h after its last write:
  ``inflight`` (the turn being answered: request, ordinal, text, message_id, answer_key),
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

from connectors.vapi.turn import VoiceTurn
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
CALL_STATE_TTL_SECONDS = 6 * 3600
#: How long a call's end-of-call report is remembered as stored: VAPI retries for minutes, a
#: replay of a captured request may come any time, and the record is a few bytes.
REPORT_TTL_SECONDS = 30 * 24 * 3600

# Claims a turn's answer key; on success marks the turn as the call's one in flight.
# KEYS: answer key, call state key. ARGV: running record, answer ttl, inflight json, call ttl.
# Returns {1, call state fields...} when claimed, {0, existing answer record} otherwise.
_CLAIM = LuaScript(
    """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local state = redis.call('HGETALL', KEYS[2])
redis.call('HSET', KEYS[2], 'inflight', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local result = {1}
for i = 1, #state do result[#result + 1] = state[i] end
return result
"""
)

# Stores a finished turn's answer and, if the turn is still the call's one in flight, what was
# sent (for barge-in detection on the next turn). Removing ``inflight`` can delete the hash (it
# was its only field) and with it the expiry, so the expiry is set again after ``last_sent``.
# KEYS: answer key, call state key.
# ARGV: answer record, answer ttl, request id, last_sent json, call ttl.
_FINISH = LuaScript(
    """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local inflight = redis.call('HGET', KEYS[2], 'inflight')
if inflight and cjson.decode(inflight)['request'] == ARGV[3] then
  redis.call('HDEL', KEYS[2], 'inflight')
  redis.call('HSET', KEYS[2], 'last_sent', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
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


def answer_key(conversation_id: str, call_id: str, ordinal: int, text: str) -> str:
    digest = hashlib.sha256(f"{call_id}\n{ordinal}\n{text}".encode()).hexdigest()[:32]
    return conversation_key(conversation_id, "vapi", "turn", digest)


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
    """The outcome of claiming a turn: ``call`` when it is ours to answer, else ``answer``, the
    record of the request that claimed it first."""

    call: Optional[CallSnapshot] = None
    answer: Optional[Dict[str, Any]] = None


class CallStore:
    """The call state and answer records of every VAPI call, in the Redis at ``redis_url``."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def _redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    async def claim(self, turn: VoiceTurn) -> Claim:
        """Claim ``turn`` and make it the call's turn in flight, unless a request claimed it
        first. Raises StateUnavailable."""
        in_flight = {
            "request": turn.request_id,
            "ordinal": turn.ordinal,
            "text": turn.last_text,
            "message_id": turn.message_id,
            "answer_key": turn.answer_key,
        }
        running = {"state": "running", "request": turn.request_id, "spoken": []}
        try:
            result = await _CLAIM(
                self._redis(),
                [turn.answer_key, turn.call_key],
                [
                    json.dumps(running),
                    ANSWER_TTL_SECONDS,
                    json.dumps(in_flight),
                    CALL_STATE_TTL_SECONDS,
                ],
            )
        except REDIS_FAILURES as error:
            raise StateUnavailable(f"claiming a voice turn: Redis unavailable ({error})") from error
        if not int(result[0]):
            return Claim(answer=json.loads(_text(result[1])))
        fields = {_text(k): _text(v) for k, v in zip(result[1::2], result[2::2], strict=True)}
        return Claim(
            call=CallSnapshot(
                in_flight=_json_field(fields, "inflight"),
                last_sent=_json_field(fields, "last_sent"),
                interrupted_at=float(fields.get("interrupted_at") or 0),
            )
        )

    async def answer(self, key: str) -> Dict[str, Any]:
        """A turn's answer record (an expired one counts as done, with nothing said)."""
        try:
            raw = await self._redis().get(key)
        except REDIS_FAILURES as error:
            raise StateUnavailable(f"Redis unavailable ({error})") from error
        return json.loads(raw) if raw else {"state": "done", "spoken": []}

    async def store_answer(self, turn: VoiceTurn) -> None:
        """Store a turn's answer (for duplicates) and, unless it was superseded, what it sent (for
        barge-in detection). Failures are logged: the caller has heard the answer already."""
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
            if turn.superseded:
                await self._redis().set(turn.answer_key, json.dumps(record), ex=ANSWER_TTL_SECONDS)
            else:
                await _FINISH(
                    self._redis(),
                    [turn.answer_key, turn.call_key],
                    [
                        json.dumps(record),
                        ANSWER_TTL_SECONDS,
                        turn.request_id,
                        json.dumps(last_sent),
                        CALL_STATE_TTL_SECONDS,
                    ],
                )
        except REDIS_FAILURES as error:
            logger.error("call %s: could not store the turn's answer: %s", turn.call_id, error)

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
