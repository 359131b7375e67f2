"""Which conversations have a chat tab open right now, fleet-wide.

A business-initiated message to a customer with a chat tab open goes there at once (the tab
shows it live), rather than by SMS. Each open web chat socket holds a place in
``omni:{<cid>}:chat:tabs`` (a sorted set of socket ids scored by the end of their lease),
renewed while the socket lives and removed when it closes; a replica that dies leaves places
that lapse with their lease. The key expires with the last lease.
"""

from __future__ import annotations

import time
from typing import Optional

from omnichannel.redis_client import AnyRedis, LuaScript, RedisBacked, conversation_key

#: A tab's place lasts this long unless renewed (the web chat renews every third of it).
TAB_LEASE_SECONDS = 60.0

# KEYS: tabs. ARGV: now ms, socket id, lease ms.
_OPEN = LuaScript(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)


class ChatPresence(RedisBacked):
    def __init__(self, redis: Optional[AnyRedis] = None) -> None:
        super().__init__(redis)

    @staticmethod
    def key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "chat", "tabs")

    async def opened(self, conversation_id: str, socket_id: str) -> None:
        """Takes or renews a tab's place."""
        await _OPEN(
            self.redis,
            [self.key(conversation_id)],
            [int(time.time() * 1000), socket_id, int(TAB_LEASE_SECONDS * 1000)],
        )

    async def closed(self, conversation_id: str, socket_id: str) -> None:
        await self.redis.zrem(self.key(conversation_id), socket_id)

    async def is_open(self, conversation_id: str) -> bool:
        """Whether a tab of the conversation is open (its lease not over) on any replica."""
        now = int(time.time() * 1000)
        return bool(await self.redis.zcount(self.key(conversation_id), now, "+inf"))
