"""What became of each message we sent by SMS or WhatsApp: Twilio's status callbacks, kept per
conversation so the viewer can show a reply as delivered or read, and so a failure reported
after the send (WhatsApp's 63016 arrives as a ``failed`` status, not as an API error) can still
be sent another way.

``omni:{<cid>}:receipts`` is a hash: message SID -> JSON ``{"channel", "status", "error_code",
"reply_to" (the inbound MessageSid the message answered, if any), "body", "media", "at"}``.
The sender records each message as it creates it (``queued``); each status callback moves it on.
Twilio does not promise callbacks in order, so a receipt only moves forward (queued, sending,
sent, delivered, read); a failure is final. The hash keeps at most :data:`MAX_RECEIPTS` messages
and expires :data:`RECEIPTS_TTL_SECONDS` after the last write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from omnichannel.redis_client import LuaScript, RedisBacked, conversation_key

RECEIPTS_TTL_SECONDS = 7 * 24 * 3600
MAX_RECEIPTS = 500
#: Statuses in the order a message moves through them (Twilio's outbound message status).
PROGRESS = ("accepted", "scheduled", "queued", "sending", "sent", "delivered", "read")
FAILED_STATUSES = ("failed", "undelivered", "canceled")
STATUSES = PROGRESS + FAILED_STATUSES

# Moves a receipt forward. KEYS: receipts hash. ARGV: sid, status, error code ('' none),
# template JSON for a receipt not recorded yet, ttl ms, cap, now. Returns the receipt JSON, or
# false when the hash is full and the sid unknown.
_UPDATE = LuaScript(
    """
local rank = {accepted=1, scheduled=1, queued=2, sending=3, sent=4, delivered=5, read=6,
              failed=9, undelivered=9, canceled=9}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local receipt
if raw then
  receipt = cjson.decode(raw)
else
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6]) then return false end
  receipt = cjson.decode(ARGV[4])
end
local old = rank[receipt['status']] or 0
local new = rank[ARGV[2]] or 0
if old < 9 and new > old then
  receipt['status'] = ARGV[2]
  if ARGV[3] ~= '' then receipt['error_code'] = ARGV[3] end
  receipt['updated'] = tonumber(ARGV[7])
end
local encoded = cjson.encode(receipt)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return encoded
"""
)


@dataclass(frozen=True)
class Receipt:
    sid: str
    channel: str
    status: str
    error_code: Optional[str] = None
    reply_to: Optional[str] = None
    body: str = ""
    media: Sequence[str] = ()

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @classmethod
    def from_json(cls, sid: str, raw: Any) -> Receipt:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        error = data.get("error_code")
        return cls(
            sid=sid,
            channel=str(data.get("channel") or ""),
            status=str(data.get("status") or ""),
            error_code=str(error) if error else None,
            reply_to=data.get("reply_to") or None,
            body=str(data.get("body") or ""),
            media=tuple(data.get("media") or ()),
        )


class Receipts(RedisBacked):
    """The receipts of conversations (any event loop's client unless one is given)."""

    @staticmethod
    def key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "receipts")

    async def record(
        self,
        conversation_id: str,
        sid: str,
        *,
        channel: str,
        status: str = "queued",
        error_code: Optional[str] = None,
        reply_to: Optional[str] = None,
        body: str = "",
        media: Sequence[str] = (),
    ) -> Optional[Receipt]:
        """Records (or moves forward) the receipt of message ``sid``; None when the
        conversation already holds :data:`MAX_RECEIPTS` others."""
        template = json.dumps(
            {
                "channel": channel,
                "status": "",
                "reply_to": reply_to,
                "body": body,
                "media": list(media),
                "at": time.time(),
            }
        )
        raw = await _UPDATE(
            self.redis,
            [self.key(conversation_id)],
            [
                sid,
                status,
                error_code or "",
                template,
                RECEIPTS_TTL_SECONDS * 1000,
                MAX_RECEIPTS,
                repr(time.time()),
            ],
        )
        return Receipt.from_json(sid, raw) if raw else None

    async def all(self, conversation_id: str) -> Dict[str, Receipt]:
        raw = await self.redis.hgetall(self.key(conversation_id))
        return {
            (sid.decode() if isinstance(sid, bytes) else sid): Receipt.from_json(
                sid.decode() if isinstance(sid, bytes) else sid, value
            )
            for sid, value in raw.items()
        }
