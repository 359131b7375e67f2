"""Background-task helpers (omnichannel/tasks.py) on a real Redis: a loop that calls Redis until
it is cancelled ends when cancelled, wherever the cancel lands."""

from __future__ import annotations

import asyncio
import random

from omnichannel.redis_client import REDIS_FAILURES, redis_client
from omnichannel.tasks import cancellable


async def test_a_redis_loop_awaiting_through_cancellable_always_ends_on_cancel(
    redis_url: str,
) -> None:
    redis = redis_client(redis_url)

    async def renew_forever() -> None:
        while True:
            try:
                await cancellable(redis.set("omni:test:renewed", "1", ex=60))
            except REDIS_FAILURES:
                continue

    for _ in range(40):
        task = asyncio.create_task(renew_forever())
        await asyncio.sleep(random.random() * 0.01)  # noqa: S311 - timing, not secrets
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done and task.cancelled()
