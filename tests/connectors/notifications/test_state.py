"""Idempotency records of the notifications API (connectors/notifications/state.py) on a real
Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from connectors.notifications.state import KEEP_SECONDS, PENDING_SECONDS, IdempotencyKeys


async def test_claim_finish_and_replay(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = IdempotencyKeys(client)
        assert await keys.claim("order-1-shipped", "digest-a") is None
        assert 0 < await client.ttl(keys.key("order-1-shipped")) <= PENDING_SECONDS
        running = await keys.claim("order-1-shipped", "digest-a")
        assert running is not None and running.same_body and running.answer is None
        other = await keys.claim("order-1-shipped", "digest-b")
        assert other is not None and not other.same_body
        await keys.finish("order-1-shipped", "digest-a", 200, {"id": "o_1", "status": "sent"})
        replay = await keys.claim("order-1-shipped", "digest-a")
        assert replay is not None and (replay.code, replay.answer) == (
            200,
            {"id": "o_1", "status": "sent"},
        )
        assert PENDING_SECONDS < await client.ttl(keys.key("order-1-shipped")) <= KEEP_SECONDS
        # The key's name carries no trace of the caller's key.
        assert "order-1" not in keys.key("order-1-shipped")
    finally:
        await client.close()


async def test_a_released_claim_lets_the_retry_start_afresh(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = IdempotencyKeys(client)
        assert await keys.claim("order-2-shipped", "digest-a") is None
        await keys.release("order-2-shipped", "digest-b")  # not its claim: kept
        assert await keys.claim("order-2-shipped", "digest-a") is not None
        await keys.release("order-2-shipped", "digest-a")
        assert await keys.claim("order-2-shipped", "digest-a") is None
    finally:
        await client.close()
