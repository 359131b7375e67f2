"""The web chat's state in Redis, shared by every replica; every key with an expiry.

Session limits (:class:`SessionLimits`, :class:`SocketHold`):

- Anonymous session tokens are minted at most ``anonymous_sessions_per_minute`` times a minute
  per client address, so one client cannot create visitors (and their Redis records) by the
  thousand.
- A session (the address a token names) may hold at most ``max_sockets_per_session`` open
  sockets. Each socket is an entry with a lease in a sorted set, renewed while it is open, so a
  replica that dies leaves nothing held for longer than one lease.
- An anonymous token can be revoked (the widget's "end chat", or an operator): its address is
  marked revoked until the token would have expired; its open sockets close at their next
  renewal and it opens no new one.

The rate limit per session (:class:`SessionBucket`, :class:`TokenBucket`): a burst of frames,
then a steady rate, for all of a session's sockets together (every tab, on every replica). The
bucket lives under the session's address, taken by one Lua script that refills it by Redis's own
clock (replicas' clocks may differ) and gives it an expiry of the time a refill to full takes: an
expired bucket and a full one are the same thing. Should Redis fail, the socket falls back on a
bucket of its own, so a limit still applies while the conversation state is unreachable.

The per-address keys share the address record's hash tag (one Cluster slot).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Optional

from omnichannel.addresses import Address
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    conversation_key,
    redis_client,
)

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


logger = logging.getLogger(__name__)

# KEYS: the bucket hash. ARGV: burst, refill per second.
# Returns 0 when a frame may pass, else the milliseconds until one may.
_TAKE = LuaScript(
    """
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - tonumber(state[2])) * rate / 1000)
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""
)


class TokenBucket:
    """``burst`` frames at once, refilled at ``rate`` per second, in this process."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate)
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def take(self) -> float:
        """0 when a frame may pass, else the seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class SessionBucket:
    """The bucket of one session (``address``), in Redis at ``redis_url``."""

    def __init__(self, redis_url: str | None, address: Address, burst: int, rate: float) -> None:
        self.redis_url = redis_url
        self.key = conversation_key(address.hash_tag, "webchat_rate")
        self.burst = burst
        self.rate = rate
        #: Used only while Redis fails.
        self.fallback = TokenBucket(burst, rate)

    async def take(self) -> float:
        """0 when a frame may pass, else the seconds until one may."""
        try:
            wait_ms = await _TAKE(redis_client(self.redis_url), [self.key], [self.burst, self.rate])
        except REDIS_FAILURES as error:
            logger.warning("web chat: shared rate limit unavailable: %s", type(error).__name__)
            return self.fallback.take()
        return int(wait_ms) / 1000
