"""Anonymous sessions are bounded (issue 14, findings 1 and 8): minted per client address at a
limited rate, sockets per session capped, tokens revocable, token lifetimes bounded, and every
Redis record of a visitor expiring."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import httpx
import jwt
import pytest
import redis
import websockets

from connectors.webchat.auth import MAX_TOKEN_LIFETIME, TokenVerifier
from connectors.webchat.frames import CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from connectors.webchat.sessions import SessionLimits
from omnichannel.identity import ANONYMOUS_TTL_SECONDS, anon_address
from omnichannel.redis_client import build_client, redis_client, redis_config

pytestmark = pytest.mark.rasa_server


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
