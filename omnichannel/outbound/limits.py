"""Rate limits of business-initiated items: per customer and for the whole business, as
fixed-window counters in Redis.

``omni:{<cid>}:outbound:rate:<window>`` counts one conversation's items in its window (the
conversation's slot), ``omni:outbound:rate:<window>`` the business's; each key expires with its
window. :meth:`RateLimiter.counts` reads them for the decision; :meth:`RateLimiter.take` counts an
item at its send moment, atomically against the bound, so two replicas never both take the last
place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omnichannel.outbound.policy import RateLimits
from omnichannel.redis_client import AnyRedis, LuaScript, RedisBacked, conversation_key, global_key

# KEYS: counter. ARGV: bound, ttl seconds. Returns 1 and counts when under the bound, else 0.
_TAKE = LuaScript(
    """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)


@dataclass(frozen=True)
class Counts:
    customer: int
    global_: int
    #: When the global window ends (epoch seconds).
    global_window_ends: float


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


class RateLimiter(RedisBacked):
    def __init__(self, limits: RateLimits, redis: Optional[AnyRedis] = None) -> None:
        super().__init__(redis)
        self.limits = limits

    def _customer_key(self, conversation_id: str, now: float) -> str:
        window = int(now // self.limits.customer_seconds)
        return conversation_key(conversation_id, "outbound", "rate", str(window))

    def _global_key(self, now: float) -> str:
        return global_key("outbound", "rate", str(int(now // self.limits.global_seconds)))

    async def counts(self, conversation_id: str, now: float) -> Counts:
        customer = await self.redis.get(self._customer_key(conversation_id, now))
        global_ = await self.redis.get(self._global_key(now))
        ends = (int(now // self.limits.global_seconds) + 1) * self.limits.global_seconds
        return Counts(_int(customer), _int(global_), float(ends))

    async def take(self, conversation_id: str, now: float) -> Optional[str]:
        """Counts one item to ``conversation_id``; None when it fits, else which limit is spent
        (``customer`` or ``global``; nothing is counted then)."""
        customer_key = self._customer_key(conversation_id, now)
        if not int(
            await _TAKE(
                self.redis,
                [customer_key],
                [self.limits.per_customer, self.limits.customer_seconds + 60],
            )
        ):
            return "customer"
        if not int(
            await _TAKE(
                self.redis,
                [self._global_key(now)],
                [self.limits.global_count, self.limits.global_seconds + 60],
            )
        ):
            await self.redis.decr(customer_key)
            return "global"
        return None
