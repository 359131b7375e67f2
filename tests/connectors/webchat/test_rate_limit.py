"""The per-socket token bucket, alone and at a real socket."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest

from connectors.webchat.rate_limit import TokenBucket
from devtools.stack import RasaStack
from tests.connectors.webchat.helpers import open_chat, recv_frame, user_token


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(burst=3, rate=20)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    wait = bucket.take()
    assert 0 < wait <= 0.05
    time.sleep(wait + 0.01)
    assert bucket.take() == 0


@pytest.mark.rasa_server
async def test_rate_limit_drops_excess_frames_then_recovers(
    rasa_stack: RasaStack, secret: str
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "flood-" + secrets.token_hex(4)))
    for number in range(25):
        await chat.ws.send(json.dumps({"type": "ping", "id": f"f{number}"}))
    frames = [await recv_frame(chat.ws) for _ in range(25)]
    pongs = [f for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f["type"] == "error"]
    assert 10 <= len(pongs) <= 15  # the burst (10) plus what refilled meanwhile (1/s)
    assert limited and all(f["code"] == "rate_limited" and f["retry_after"] > 0 for f in limited)
    assert {f["id"] for f in limited} | {f["id"] for f in pongs} == {f"f{n}" for n in range(25)}
    await asyncio.sleep(1.5)
    await chat.ws.send(json.dumps({"type": "ping", "id": "after"}))
    assert await recv_frame(chat.ws) == {"type": "pong", "id": "after"}
    await chat.ws.close()
