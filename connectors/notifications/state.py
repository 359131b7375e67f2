"""Idempotency of the notifications API in Redis: backends retry, so one ``Idempotency-Key``
stands for one notification.

``omni:{n_<sha256 of the key>}:notify`` (its own hash tag: key names carry no caller data) holds
the digest of the first request's body, its state (``pending`` while the first request runs,
then ``done``) and the first answer (status code and JSON). The same key with the same body
gets that answer again; with another body a 422; while the first runs, a 409 (retry shortly).
A pending claim lapses after :data:`PENDING_SECONDS` (a replica that died mid-request), a done
record after :data:`KEEP_SECONDS`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

from omnichannel.redis_client import AnyRedis, LuaScript, conversation_key

KEEP_SECONDS = 24 * 3600
PENDING_SECONDS = 30

# KEYS: record. ARGV: digest, pending ttl. Returns {1} when claimed, else {0, digest, state,
# code, answer}.
_CLAIM = LuaScript(
    """
local found = redis.call('HMGET', KEYS[1], 'digest', 'state', 'code', 'answer')
if found[1] then return {0, found[1], found[2] or '', found[3] or '', found[4] or ''} end
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'state', 'pending')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1}
"""
)

# KEYS: record. ARGV: digest, code, answer, keep.
_DONE = LuaScript(
    """
if redis.call('HGET', KEYS[1], 'digest') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'code', ARGV[2], 'answer', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
)


def item_id_of(idempotency_key: str) -> str:
    """The notification an idempotency key stands for: the same id on every retry, so a retry
    after the first request's replica died finds the item it recorded instead of sending it
    again (items are created once per id)."""
    digest = hashlib.sha256(b"notification:" + idempotency_key.encode("utf-8")).digest()
    return "o_" + base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Earlier:
    """What an idempotency key already stands for: another body (``same_body`` False), a
    request still running (``answer`` None), or the first answer."""

    same_body: bool
    code: Optional[int] = None
    answer: Optional[Dict[str, Any]] = None


class IdempotencyKeys:
    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis

    @staticmethod
    def key(idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
        return conversation_key(f"n_{digest}", "notify")

    async def claim(self, idempotency_key: str, digest: str) -> Optional[Earlier]:
        """None when this request is the first with the key (it must then :meth:`finish`)."""
        found = await _CLAIM(self.redis, [self.key(idempotency_key)], [digest, PENDING_SECONDS])
        if int(found[0]) == 1:
            return None
        same = _text(found[1]) == digest
        if not same or _text(found[2]) != "done":
            return Earlier(same)
        return Earlier(True, int(_text(found[3])), json.loads(_text(found[4])))

    async def finish(
        self, idempotency_key: str, digest: str, code: int, answer: Dict[str, Any]
    ) -> None:
        await _DONE(
            self.redis,
            [self.key(idempotency_key)],
            [digest, code, json.dumps(answer), KEEP_SECONDS],
        )

    async def release(self, idempotency_key: str, digest: str) -> None:
        """Drops a claim whose request failed before anything was recorded (a retry is new)."""
        key = self.key(idempotency_key)
        if _text(await self.redis.hget(key, "digest") or b"") == digest:
            await self.redis.delete(key)
