"""The web chat's state in Redis (connectors/webchat/state.py).

Anonymous sessions are bounded: minted per client address at a limited rate, sockets per
session capped, tokens revocable, token lifetimes bounded, and every Redis record of a visitor
expiring. The chat rate limit: a session's bucket in Redis, shared by its sockets (tabs,
replicas), with a bucket of the socket's own while Redis fails."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from pathlib import Path

import httpx
import jwt
import pytest
import redis
import websockets

from connectors.webchat.auth import TokenVerifier
from connectors.webchat.state import SessionBucket, SessionLimits, TokenBucket
from connectors.webchat.wire import CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from omnichannel.addresses import ANONYMOUS_TTL_SECONDS, anon_address, user_address
from omnichannel.customer_tokens import MAX_TOKEN_LIFETIME
from omnichannel.redis_client import build_client, redis_client, redis_config
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisDeployment
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import open_chat, recv_frame, user_token


def _ws_url(stack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"


async def _new_session(http: httpx.AsyncClient, stack, client_ip: str) -> httpx.Response:
    return await http.post(
        f"{stack.base_url}/webhooks/webchat/session", headers={"X-Forwarded-For": client_ip}
    )


async def _open_chat(stack, token: str):
    ws = await websockets.connect(_ws_url(stack))
    await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


async def _first_frame_or_close(ws) -> tuple[str, int]:
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return frame["type"], 0
    except websockets.ConnectionClosed as closed:
        return "closed", closed.code


@pytest.mark.rasa_server
async def test_anonymous_sessions_are_limited_per_client_address(rasa_stack) -> None:
    client_ip = f"198.51.100.{secrets.randbelow(250) + 1}"
    other_ip = f"203.0.113.{secrets.randbelow(250) + 1}"
    async with httpx.AsyncClient(timeout=10) as http:
        statuses = [
            (await _new_session(http, rasa_stack, client_ip)).status_code for _ in range(12)
        ]
        refused = await _new_session(http, rasa_stack, client_ip)
        elsewhere = await _new_session(http, rasa_stack, other_ip)
    assert statuses == [200] * 10 + [429] * 2
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert elsewhere.status_code == 200


@pytest.mark.rasa_server
async def test_sockets_per_session_are_capped_and_a_revoked_token_is_shut_out(rasa_stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        token = (await _new_session(http, rasa_stack, "192.0.2.10")).json()["token"]
        sockets = [await _open_chat(rasa_stack, token) for _ in range(10)]
        firsts = [await _first_frame_or_close(ws) for ws in sockets]
        assert all(kind == "ready" for kind, _ in firsts), firsts

        eleventh = await _open_chat(rasa_stack, token)
        assert await _first_frame_or_close(eleventh) == ("closed", CLOSE_TOO_MANY)

        await sockets[0].close()
        await asyncio.sleep(0.3)
        again = await _open_chat(rasa_stack, token)
        assert (await _first_frame_or_close(again))[0] == "ready"

        ended = await http.delete(
            f"{rasa_stack.base_url}/webhooks/webchat/session",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ended.status_code == 204
        after = await _open_chat(rasa_stack, token)
        assert await _first_frame_or_close(after) == ("closed", CLOSE_UNAUTHENTICATED)
        for ws in [*sockets[1:], again]:
            await ws.close()


@pytest.mark.rasa_server
async def test_host_tokens_cannot_be_ended_here(rasa_stack) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "site-user-1", "exp": now + 600},
        rasa_stack.env["WEBCHAT_JWT_SECRET"],
        algorithm="HS256",
    )
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.delete(
            f"{rasa_stack.base_url}/webhooks/webchat/session",
            headers={"Authorization": f"Bearer {token}"},
        )
        missing = await http.delete(f"{rasa_stack.base_url}/webhooks/webchat/session")
    assert reply.status_code == 400 and missing.status_code == 401


@pytest.mark.rasa_server
async def test_a_token_valid_until_2300_is_refused(rasa_stack) -> None:
    far = jwt.encode(
        {"sub": "site-user-2", "exp": 10_413_792_000},  # the year 2300
        rasa_stack.env["WEBCHAT_JWT_SECRET"],
        algorithm="HS256",
    )
    ws = await _open_chat(rasa_stack, far)
    assert await _first_frame_or_close(ws) == ("closed", CLOSE_UNAUTHENTICATED)
    verifier = TokenVerifier(rasa_stack.env["WEBCHAT_JWT_SECRET"], True)
    near = jwt.encode(
        {"sub": "u", "exp": int(time.time()) + MAX_TOKEN_LIFETIME - 60},
        rasa_stack.env["WEBCHAT_JWT_SECRET"],
        algorithm="HS256",
    )
    assert verifier.verify(near).address.value == "u"


@pytest.mark.rasa_server
async def test_every_record_of_an_anonymous_visitor_expires(rasa_stack, stack_redis) -> None:
    """Before: an address record, a profile and an address set per visitor, kept forever."""
    async with httpx.AsyncClient(timeout=10) as http:
        token = (await _new_session(http, rasa_stack, "192.0.2.77")).json()["token"]
    ws = await _open_chat(rasa_stack, token)
    assert (await _first_frame_or_close(ws))[0] == "ready"
    await ws.close()
    anon_id = jwt.decode(token, options={"verify_signature": False})["anon_id"]
    address = anon_address(anon_id)
    with redis.Redis.from_url(stack_redis.url) as client:
        conversation = client.get(address.record_key).decode()
        keys = [
            key
            for pattern in (f"*{{{address.hash_tag}}}*", f"*{{{conversation}}}*")
            for key in client.scan_iter(match=pattern, count=1000)
        ]
        ttls = {key.decode(): client.pttl(key) for key in keys}
    # -2: gone between the scan and the look (the socket's place, released as it closed).
    ttls = {key: ttl for key, ttl in ttls.items() if ttl != -2}
    assert len(ttls) >= 3
    assert all(0 < ttl <= ANONYMOUS_TTL_SECONDS * 1000 for ttl in ttls.values()), ttls


@pytest.mark.rasa_server
async def test_session_limits_hold_across_clients_of_one_redis(redis_deployment) -> None:
    """Two replicas share the count: two separate clients of the same deployment see one limit."""
    limits = SessionLimits(max_sockets=2, sessions_per_minute=3)
    first = redis_client(redis_deployment.url)
    second = build_client(redis_config(redis_deployment.url))
    assert first is not second
    try:
        outcomes = [await limits.allow_new_session(c, "10.1.1.1") for c in (first, second) * 2]
        assert outcomes[:3] == [None, None, None] and outcomes[3] is not None
        visitor = anon_address(secrets.token_urlsafe(18))
        held = [await limits.hold_socket(first, visitor, f"s{i}") for i in range(3)]
        assert [hold.held for hold in held] == [True, True, False]
        await limits.revoke(second, visitor, 60)
        assert (await limits.hold_socket(first, visitor, "s0")).revoked
    finally:
        await second.close()


# -- the rate limit per session --------------------------------------------------------------


@pytest.mark.unit
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
    started = time.monotonic()
    for number in range(25):
        await chat.ws.send(json.dumps({"type": "ping", "id": f"f{number}"}))
    frames = [await recv_frame(chat.ws) for _ in range(25)]
    took = time.monotonic() - started
    pongs = [f for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f["type"] == "error"]
    # The burst (10) plus what refilled meanwhile (1 a second), however long the flood took.
    assert 10 <= len(pongs) <= 10 + math.ceil(took), (len(pongs), took)
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
