"""Limits on chat sessions that hold across replicas: in Redis, every key with an expiry.

- Anonymous session tokens are minted at most ``anonymous_sessions_per_minute`` times a minute
  per client address, so one client cannot create visitors (and their Redis records) by the
  thousand.
- A session (the address a token names) may hold at most ``max_sockets_per_session`` open
  sockets. Each socket is an entry with a lease in a sorted set, renewed while it is open, so a
  replica that dies leaves nothing held for longer than one lease.
- An anonymous token can be revoked (the widget's "end chat", or an operator): its address is
  marked revoked until the token would have expired; its open sockets close at their next
  renewal and it opens no new one.

The per-address keys share the address record's hash tag (one Cluster slot).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Optional

from omnichannel.identity import Address
from omnichannel.redis_client import AnyRedis, LuaScript, conversation_key

#: How long a socket's entry lives without renewal; renewed every third of it.
SOCKET_LEASE_SECONDS = 60.0
RATE_WINDOW_SECONDS = 60

# KEYS: sockets zset, revoked marker. ARGV: now ms, socket id, cap, lease ms.
# Returns 1 (held), 0 (cap reached), -1 (the session was revoked).
_HOLD_SOCKET = LuaScript(
    """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return -1
end
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
)

# KEYS: counter. ARGV: window ms. Returns {count in this window, ms left in it}.
_COUNT = LuaScript(
    """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""
)


def _sockets_key(address: Address) -> str:
    return conversation_key(address.hash_tag, "sockets")


def _revoked_key(address: Address) -> str:
    return conversation_key(address.hash_tag, "revoked")


@dataclass(frozen=True)
class SocketHold:
    """Outcome of holding (or renewing) a socket's place in its session."""

    held: bool
    revoked: bool = False


class SessionLimits:
    """The Redis side of the limits above, for one channel's options."""

    def __init__(self, max_sockets: int, sessions_per_minute: int) -> None:
        self.max_sockets = max_sockets
        self.sessions_per_minute = sessions_per_minute

    async def hold_socket(self, redis: AnyRedis, address: Address, socket_id: str) -> SocketHold:
        """Takes or renews the socket's place; refused when the session is full or revoked."""
        result = await _HOLD_SOCKET(
            redis,
            [_sockets_key(address), _revoked_key(address)],
            [
                int(time.time() * 1000),
                socket_id,
                self.max_sockets,
                int(SOCKET_LEASE_SECONDS * 1000),
            ],
        )
        return SocketHold(held=int(result) == 1, revoked=int(result) == -1)

    async def release_socket(self, redis: AnyRedis, address: Address, socket_id: str) -> None:
        await redis.zrem(_sockets_key(address), socket_id)

    async def revoke(self, redis: AnyRedis, address: Address, seconds_left: float) -> None:
        """Marks the session revoked for as long as its token would have been valid."""
        await redis.set(_revoked_key(address), "1", px=max(1000, int(seconds_left * 1000)))

    async def revoked(self, redis: AnyRedis, address: Address) -> bool:
        """Whether the session was ended (its token may not open or upload anything more)."""
        return bool(await redis.exists(_revoked_key(address)))

    async def allow_new_session(self, redis: AnyRedis, client_address: str) -> Optional[float]:
        """None when one more anonymous session may be minted for ``client_address``; else the
        seconds until it may. Client addresses are hashed: no IP address in key names."""
        digest = hashlib.sha256(client_address.encode("utf-8")).hexdigest()[:32]
        key = conversation_key(f"ip_{digest}", "webchat_sessions")
        count, left_ms = await _COUNT(redis, [key], [RATE_WINDOW_SECONDS * 1000])
        if int(count) <= self.sessions_per_minute:
            return None
        return max(1.0, int(left_ms) / 1000)
