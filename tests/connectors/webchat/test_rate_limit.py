"""The chat rate limit: a session's bucket in Redis, shared by its sockets (tabs, replicas), with
a bucket of the socket's own while Redis fails."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest

from connectors.webchat.rate_limit import SessionBucket, TokenBucket
from devtools.processes import RedisServer
from devtools.redis_topologies import RedisDeployment
from devtools.stack import RasaStack
from omnichannel.identity import user_address
from omnichannel.redis_client import redis_client
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


async def test_a_session_bucket_is_shared_by_its_sockets_and_expires(
    redis_deployment: RedisDeployment,
) -> None:
    address = user_address("tabs-" + secrets.token_hex(4))
    tabs = [SessionBucket(redis_deployment.url, address, burst=3, rate=2) for _ in range(2)]
    waits = [await tabs[n % 2].take() for n in range(6)]
    assert waits[:3] == [0, 0, 0], "the burst, whichever tab sends"
    assert all(0 < wait <= 0.5 for wait in waits[3:]), waits
    other = SessionBucket(redis_deployment.url, user_address("someone-else"), burst=3, rate=2)
    assert await other.take() == 0, "another session has its own bucket"
    ttl = await redis_client(redis_deployment.url).pttl(tabs[0].key)
    assert 0 < ttl <= 3 / 2 * 1000 + 1000, "it expires once it would be full again"
    await asyncio.sleep(0.55)
    assert await tabs[1].take() == 0, "refilled at the rate"


async def test_the_socket_keeps_a_limit_of_its_own_while_redis_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_RETRY_SECONDS", "0")
    server = RedisServer(tmp_path / "redis").start()
    bucket = SessionBucket(server.url, user_address("outage"), burst=2, rate=1)
    assert await bucket.take() == 0
    server.stop()
    assert [await bucket.take() > 0 for _ in range(3)] == [False, False, True]


@pytest.mark.rasa_server
async def test_two_tabs_of_one_session_share_one_allowance(
    rasa_stack: RasaStack, secret: str
) -> None:
    token = user_token(secret, "tabs-" + secrets.token_hex(4))
    tabs = [await open_chat(rasa_stack, token) for _ in range(2)]
    for number in range(15):
        for tab, chat in enumerate(tabs):
            await chat.ws.send(json.dumps({"type": "ping", "id": f"t{tab}-{number}"}))
    frames = [await recv_frame(chat.ws) for chat in tabs for _ in range(15)]
    pongs = [f for f in frames if f["type"] == "pong"]
    assert {f["code"] for f in frames if f["type"] == "error"} == {"rate_limited"}
    assert 10 <= len(pongs) <= 13, "the burst (10) once, not once per tab"
    for chat in tabs:
        await chat.ws.close()
