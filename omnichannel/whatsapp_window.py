"""WhatsApp's 24-hour customer-service window, and what waits for it to open again.

WhatsApp lets a business send free-form messages (text, media, quick replies) only within 24
hours of the customer's last message to it; each inbound message restarts the window. Outside
it only an approved template may be sent (``ContentSid`` + ``ContentVariables``); anything else
fails at Twilio with error 63016 (Twilio's error page and support article 360017773294).

The window is a Redis key of its own, written by the Twilio connector on every inbound WhatsApp
message with an expiry of exactly the window: the key exists while free-form messages may be
sent, and disappears when they may not. It holds when the customer last wrote and to which of
our WhatsApp senders (replies go from that sender). Keys, all in the conversation's slot:

- ``omni:{<cid>}:whatsapp_window``: ``{"at": <epoch seconds>, "sender": "whatsapp:+1…"}``,
  expiring 24 h after ``at``; deleted when Twilio reports 63016 (its clock and WhatsApp's decide,
  not ours);
- ``omni:{<cid>}:whatsapp_unreachable``: the error code that showed the number cannot get
  WhatsApp messages from us (63024 not on WhatsApp, 63003 bad address, 63014 blocked by the
  user), for :data:`UNREACHABLE_TTL_SECONDS` or until the customer writes on WhatsApp again;
- ``omni:{<cid>}:whatsapp_held``: messages that could be sent neither in the window, nor as a
  template, nor by SMS: held (at most :data:`MAX_HELD`, for :data:`HELD_TTL_SECONDS`) and sent
  as soon as the customer writes on WhatsApp again, which opens the window.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from omnichannel.redis_client import LuaScript, RedisBacked, conversation_key

#: WhatsApp's customer-service window.
WINDOW_SECONDS = 24 * 3600
#: The last minutes of a window count as closed: a message sent then may reach WhatsApp after
#: the window has shut, and fail.
CLOSING_MARGIN_SECONDS = 120
#: How long a number Twilio reported unreachable on WhatsApp is not tried there again.
UNREACHABLE_TTL_SECONDS = 30 * 24 * 3600
#: Held messages: how many at most per conversation, and for how long.
MAX_HELD = 20
HELD_TTL_SECONDS = 7 * 24 * 3600

# Appends a held entry, keeping the newest ARGV[3]. KEYS: held list. ARGV: entry, ttl ms, cap.
_HOLD = LuaScript(
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('LLEN', KEYS[1])
"""
)

# Records an inbound WhatsApp message: the window opens (or restarts) and the number is
# reachable again. KEYS: window, unreachable. ARGV: window JSON, ttl ms.
_OPEN = LuaScript(
    """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
)


@dataclass(frozen=True)
class Window:
    """An open customer-service window."""

    opened_at: float
    #: Our WhatsApp sender the customer wrote to (``whatsapp:+1…``), or None.
    sender: Optional[str]

    @property
    def closes_at(self) -> float:
        return self.opened_at + WINDOW_SECONDS

    def is_open(self, now: Optional[float] = None) -> bool:
        """True while a free-form message sent now still arrives inside the window."""
        now = time.time() if now is None else now
        return now < self.closes_at - CLOSING_MARGIN_SECONDS


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class WhatsAppState(RedisBacked):
    """The window, the unreachable mark and the held messages of conversations, in Redis.

    Without an explicit client it takes ``redis_client()`` on every call (any event loop).
    """

    @staticmethod
    def window_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "whatsapp_window")

    @staticmethod
    def unreachable_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "whatsapp_unreachable")

    @staticmethod
    def held_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "whatsapp_held")

    async def customer_wrote(
        self, conversation_id: str, sender: Optional[str], at: Optional[float] = None
    ) -> None:
        """An inbound WhatsApp message (to our ``sender``) opens the window for 24 hours."""
        at = time.time() if at is None else at
        remaining_ms = int((at + WINDOW_SECONDS - time.time()) * 1000)
        if remaining_ms <= 0:
            return
        value = json.dumps({"at": at, "sender": sender})
        await _OPEN(
            self.redis,
            [self.window_key(conversation_id), self.unreachable_key(conversation_id)],
            [value, remaining_ms],
        )

    async def window(self, conversation_id: str) -> Optional[Window]:
        """The open window, or None when the customer has not written within 24 hours."""
        raw = await self.redis.get(self.window_key(conversation_id))
        if raw is None:
            return None
        data = json.loads(_text(raw))
        sender = data.get("sender")
        return Window(float(data["at"]), sender if isinstance(sender, str) else None)

    async def close(self, conversation_id: str) -> None:
        """Twilio reported 63016: WhatsApp considers the window closed, whatever our clock says."""
        await self.redis.delete(self.window_key(conversation_id))

    async def mark_unreachable(self, conversation_id: str, error_code: str) -> None:
        await self.redis.set(
            self.unreachable_key(conversation_id), error_code, ex=UNREACHABLE_TTL_SECONDS
        )

    async def unreachable(self, conversation_id: str) -> Optional[str]:
        """The error code that showed the number cannot get our WhatsApp messages, if any."""
        raw = await self.redis.get(self.unreachable_key(conversation_id))
        return _text(raw) if raw is not None else None

    async def hold(
        self, conversation_id: str, messages: Sequence[Mapping[str, Any]], reason: str
    ) -> int:
        """Keeps ``messages`` (Rasa's message dicts) until the window opens; returns how many
        entries are held now (the oldest are dropped beyond :data:`MAX_HELD`)."""
        entry = json.dumps({"messages": list(messages), "reason": reason, "at": time.time()})
        return int(
            await _HOLD(
                self.redis,
                [self.held_key(conversation_id)],
                [entry, HELD_TTL_SECONDS * 1000, MAX_HELD],
            )
        )

    async def held(self, conversation_id: str) -> List[Dict[str, Any]]:
        """The held entries, oldest first: ``{"messages": [...], "reason": …, "at": …}``."""
        raw = await self.redis.lrange(self.held_key(conversation_id), 0, -1)
        return [json.loads(_text(item)) for item in raw]

    async def release(self, conversation_id: str, count: int) -> None:
        """Drops the ``count`` oldest held entries (they were handed to the outbox)."""
        if count > 0:
            await self.redis.ltrim(self.held_key(conversation_id), count, -1)
