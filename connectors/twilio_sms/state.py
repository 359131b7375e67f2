"""The connector's state in Redis besides its in-flight work (:mod:`.turns`, :mod:`.outbox`):
the delivery ledger (which delivery an idempotency token stands for) and the numbered options a
conversation was last offered by SMS.

Both take the Redis URL read once at start-up; the client itself is this event loop's
(:func:`omnichannel.redis_client.redis_client`), as redis.asyncio connections belong to a loop.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence, Tuple

from omnichannel.redis_client import conversation_key, global_key, redis_client
from omnichannel.rendering.messages import Button


class DeliveryLedger:
    """Which delivery a webhook request is, across replicas.

    ``omni:sms:idem:<token>`` maps an ``I-Twilio-Idempotency-Token`` to the MessageSid it first
    came with (Redis ``SET NX`` with a TTL), so a retry under a new MessageSid is recognised as
    the delivery it repeats. Whether that delivery was seen, is running or is done, and the
    answer it got, is its ``sms_turn`` item (:mod:`omnichannel.leases`): the one place that
    decides what a duplicate gets.
    """

    def __init__(self, redis_url: str, ttl_seconds: int) -> None:
        self.redis_url = redis_url
        self.ttl = ttl_seconds

    @staticmethod
    def token_key(token: str) -> str:
        return global_key("sms", "idem", token)

    async def delivery_of(self, message_sid: str, token: Optional[str]) -> str:
        """The MessageSid of the delivery this request is: ``message_sid``, or the one its
        idempotency ``token`` first came with."""
        if not token:
            return message_sid
        redis = redis_client(self.redis_url)
        key = self.token_key(token)
        if await redis.set(key, message_sid, nx=True, ex=self.ttl):
            return message_sid
        earlier = await redis.get(key)
        return earlier.decode() if isinstance(earlier, bytes) else (earlier or message_sid)


class OfferedButtons:
    """The numbered options ("Reply 1 for …") a conversation was last texted, so its next "1"
    means the first one; kept for ``ttl_seconds`` and replaced by each turn."""

    def __init__(self, redis_url: str, ttl_seconds: int) -> None:
        self.redis_url = redis_url
        self.ttl = ttl_seconds

    @staticmethod
    def key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "sms_buttons")

    async def get(self, conversation_id: str) -> Tuple[Button, ...]:
        raw = await redis_client(self.redis_url).get(self.key(conversation_id))
        if not raw:
            return ()
        return tuple(
            Button(title=item["title"], payload=item["payload"]) for item in json.loads(raw)
        )

    async def remember(self, conversation_id: str, buttons: Sequence[Button]) -> None:
        redis = redis_client(self.redis_url)
        key = self.key(conversation_id)
        if buttons:
            value = json.dumps([{"title": b.title, "payload": b.payload} for b in buttons])
            await redis.set(key, value, ex=self.ttl)
        else:
            await redis.delete(key)
