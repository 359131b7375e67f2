"""Chat rate limit per session: a burst of frames, then a steady rate, for all of a session's
sockets together (every tab, on every replica).

The bucket lives in Redis under the session's address (its own hash tag, as the socket leases in
:mod:`connectors.webchat.sessions`), taken by one Lua script that refills it by Redis's own clock
(replicas' clocks may differ) and gives it an expiry of the time a refill to full takes: an
expired bucket and a full one are the same thing. Should Redis fail, the socket falls back on a
bucket of its own, so a limit still applies while the conversation state is unreachable.
"""

from __future__ import annotations

import logging
import time

from omnichannel.identity import Address
from omnichannel.redis_client import REDIS_FAILURES, LuaScript, conversation_key, redis_client

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
