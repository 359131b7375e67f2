"""The connector's state in Redis: the delivery ledger (which webhook deliveries were seen, and
what they were answered) and the numbered options a conversation was last offered by SMS.

Both take the Redis URL read once at start-up; the client itself is this event loop's
(:func:`omnichannel.redis_client.redis_client`), as redis.asyncio connections belong to a loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from connectors.twilio_sms.twiml import EMPTY_TWIML
from omnichannel.redis_client import AnyRedis, conversation_key, global_key, redis_client
from omnichannel.rendering.messages import Button


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming a delivery: ``first`` is True for the delivery that runs the turn;
    duplicates carry the stored answer (empty TwiML while the first one still runs)."""

    first: bool
    answer: str = EMPTY_TWIML


class DeliveryLedger:
    """Which message deliveries were seen, across replicas (Redis ``SET NX`` with a TTL).

    ``omni:sms:msg:<MessageSid>`` holds ``{"state": "running"}`` until the turn ends, then
    ``{"state": "done", "twiml": …}``: the answer Twilio got, so a duplicate gets the same one.
    ``omni:sms:idem:<token>`` maps an ``I-Twilio-Idempotency-Token`` to the MessageSid it came
    with, so a retried delivery is recognised by either.

    A replica that dies mid-turn leaves its record "running": redeliveries then get an empty
    answer instead of a second turn. For SMS, at most once is the safer side (the customer can
    write again; a double answer or a double refund request cannot be taken back).
    """

    def __init__(self, redis_url: str, ttl_seconds: int) -> None:
        self.redis_url = redis_url
        self.ttl = ttl_seconds

    @property
    def redis(self) -> AnyRedis:
        return redis_client(self.redis_url)

    @staticmethod
    def message_key(message_sid: str) -> str:
        return global_key("sms", "msg", message_sid)

    @staticmethod
    def token_key(token: str) -> str:
        return global_key("sms", "idem", token)

    async def claim(self, message_sid: str, token: Optional[str]) -> Claim:
        redis = self.redis
        sid = message_sid
        if token:
            key = self.token_key(token)
            if not await redis.set(key, message_sid, nx=True, ex=self.ttl):
                earlier = await redis.get(key)
                sid = earlier.decode() if isinstance(earlier, bytes) else (earlier or message_sid)
        record = json.dumps({"state": "running", "at": time.time()})
        if sid == message_sid and await redis.set(
            self.message_key(sid), record, nx=True, ex=self.ttl
        ):
            return Claim(first=True)
        stored = await redis.get(self.message_key(sid))
        try:
            state = json.loads(stored) if stored else {}
        except ValueError:
            state = {}
        return Claim(first=False, answer=state.get("twiml") or EMPTY_TWIML)

    async def finish(self, message_sid: str, answer: str) -> None:
        record = json.dumps({"state": "done", "twiml": answer, "at": time.time()})
        await self.redis.set(self.message_key(message_sid), record, ex=self.ttl)


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
