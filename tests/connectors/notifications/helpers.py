"""Sending notifications to the shared stack as the shop's backend does, and placing its test
customers in a time zone where it is day (or night) right now."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Dict, Optional

import httpx
import redis
import redis.asyncio as aioredis

from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import TIMEZONE_FIELD
from testkit.stack import RasaStack

SEND_PATH = "/webhooks/notifications/send"


def zone_at_local_hour(hour: int, now: Optional[float] = None) -> str:
    """An IANA zone (``Etc/GMT±N``, no daylight saving) where it is ``hour`` o'clock now."""
    utc_hour = time.gmtime(time.time() if now is None else now).tm_hour
    offset = (hour - utc_hour) % 24
    if offset > 14:
        offset -= 24
    if offset == 0:
        return "Etc/GMT"
    # POSIX sign convention: Etc/GMT-2 is two hours ahead of UTC.
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


async def place_customer(stack: RasaStack, conversation_id: str, hour: int) -> str:
    """The conversation learns its customer's zone: one where it is ``hour`` o'clock now."""
    zone = zone_at_local_hour(hour)
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        await IdentityStore(client).set_extra(conversation_id, TIMEZONE_FIELD, zone)
    finally:
        await client.close()
    return zone


def notify(
    stack: RasaStack,
    body: Dict[str, Any],
    *,
    key: Optional[str] = None,
    api_key: Optional[str] = None,
    raw: Optional[bytes] = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    token = stack.env["NOTIFICATIONS_API_KEY"] if api_key is None else api_key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key != "":
        headers["Idempotency-Key"] = key or f"test-{secrets.token_hex(8)}"
    return httpx.post(
        stack.base_url + SEND_PATH,
        content=raw if raw is not None else json.dumps(body).encode(),
        headers=headers,
        timeout=30,
    )


async def anotify(stack: RasaStack, body: Dict[str, Any], **options: Any) -> httpx.Response:
    return await asyncio.to_thread(notify, stack, body, **options)


def shipped(customer: Dict[str, str], order: str, **extra: Any) -> Dict[str, Any]:
    return {
        "customer": customer,
        "response": "utter_order_shipped",
        "slots": {"order_number": order},
        **extra,
    }


def conversation_of(stack: RasaStack, number: str) -> str:
    """The conversation identity mapped ``number`` to (it must exist)."""
    with redis.Redis.from_url(stack.env["REDIS_URL"]) as client:
        value = client.get(phone_address(number).record_key)
    assert value, "no conversation for that number"
    return value.decode()
