"""The demo's refund requests: what "I've started a refund request" and "I've added the photo to
your refund request" stand for, kept where support staff (the conversation viewer) can see them.

``omni:{<cid>}:refunds`` is a hash: order number -> JSON ``{"order", "started_at", "photos":
[{"sha256", "content_type", "size", "source", "url" | "upload_id", "added_at"}]}``, expiring
:data:`REFUNDS_TTL_SECONDS` after its last change, at most :data:`MAX_PHOTOS` photos a request
(a photo already there, by its SHA-256, is not added twice). A real shop would hand these to its
order system; the photos themselves stay where they arrived (Twilio's media store, the web
chat's uploads), referenced here.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping

from omnichannel.redis_client import LuaScript, RedisBacked, conversation_key

REFUNDS_TTL_SECONDS = 90 * 24 * 3600
MAX_PHOTOS = 10

# Adds a photo to a request (creating it). KEYS: refunds hash. ARGV: order, request JSON for a
# new one, photo JSON, ttl ms, cap. Returns the number of photos, or -1 when full.
_ADD_PHOTO = LuaScript(
    """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local request = raw and cjson.decode(raw) or cjson.decode(ARGV[2])
local photo = cjson.decode(ARGV[3])
if type(request['photos']) ~= 'table' then request['photos'] = {} end
for _, existing in ipairs(request['photos']) do
  if existing['sha256'] == photo['sha256'] then return #request['photos'] end
end
if #request['photos'] >= tonumber(ARGV[5]) then return -1 end
table.insert(request['photos'], photo)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(request))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return #request['photos']
"""
)


class RefundRequests(RedisBacked):
    """Refund requests per conversation (any event loop's client unless one is given)."""

    @staticmethod
    def key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "refunds")

    @staticmethod
    def _new(order: str) -> Dict[str, Any]:
        return {"order": order, "started_at": time.time(), "photos": []}

    async def start(self, conversation_id: str, order: str) -> None:
        """Records a refund request for ``order`` (kept as it is when one exists)."""
        key = self.key(conversation_id)
        await self.redis.hsetnx(key, order, json.dumps(self._new(order)))
        await self.redis.pexpire(key, REFUNDS_TTL_SECONDS * 1000)

    async def add_photo(self, conversation_id: str, order: str, photo: Mapping[str, Any]) -> int:
        """Adds ``photo`` (see the module docstring) to the request of ``order``; returns how
        many photos it holds, or -1 when it holds :data:`MAX_PHOTOS` already."""
        entry = {**photo, "added_at": time.time()}
        return int(
            await _ADD_PHOTO(
                self.redis,
                [self.key(conversation_id)],
                [
                    order,
                    json.dumps(self._new(order)),
                    json.dumps(entry),
                    REFUNDS_TTL_SECONDS * 1000,
                    MAX_PHOTOS,
                ],
            )
        )

    async def all(self, conversation_id: str) -> List[Dict[str, Any]]:
        """Every refund request of the conversation, oldest first."""
        raw = await self.redis.hgetall(self.key(conversation_id))
        requests = [json.loads(value) for value in raw.values()]
        return sorted(requests, key=lambda request: request.get("started_at") or 0)
