"""Rasa's own HTTP API under the server's limits: its token (or JWT) is checked on the head,
before the body. Rasa's real ``create_app`` with a token and a JWT secret, served in this
process with a channel blueprint registered (which installs the HTTP edge), as ``rasa run
--enable-api`` builds it; no model is loaded, so an admitted request ends in Rasa's 409."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import Tuple

import jwt
import pytest
from rasa.server import create_app
from sanic import Sanic

from connectors.http_limits import ChannelBlueprint, policy_of
from connectors.rasa_api import RasaTokenGuard
from testkit.processes import free_port
from tests.connectors.twilio_sms.helpers import serve_app

TOKEN = secrets.token_urlsafe(24)
JWT_SECRET = secrets.token_urlsafe(32)
HUGE = 95 * 1024 * 1024


@pytest.fixture(autouse=True)
def _sanic_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sanic, "test_mode", True)


def _rasa_app() -> Sanic:
    app = create_app(auth_token=TOKEN, jwt_secret=JWT_SECRET, jwt_method="HS256")
    app.blueprint(ChannelBlueprint(f"edge_{secrets.token_hex(4)}", __name__), url_prefix="/x")
    return app


def _jwt(role: str, username: str = "someone") -> str:
    return jwt.encode({"user": {"username": username, "role": role}}, JWT_SECRET, "HS256")


def _post(port: int, path: str, body: bytes, headers: str = "") -> Tuple[int, float, bytes]:
    """(status, seconds until the server closed or 5 s, reply) for a POST announcing ``body``
    but sending only its first 1,000 bytes when it is large (blocking: run it in a thread, the
    server shares this process's event loop)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body[:1000]
        )
        reply = b""
        sock.settimeout(0.5)
        while time.monotonic() - started < 5:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            reply += data
    status = int(reply.split(b" ", 2)[1]) if reply else 0
    return status, time.monotonic() - started, reply


async def _posted(port: int, path: str, body: bytes, headers: str = "") -> Tuple[int, float, bytes]:
    return await asyncio.to_thread(_post, port, path, body, headers)


@pytest.mark.unit
async def test_every_protected_rasa_route_checks_its_token_before_the_body() -> None:
    app = _rasa_app()
    guarded, open_routes = [], []
    for route in app.router.routes:
        policy = policy_of(route.handler)
        (guarded if isinstance(policy.admit, RasaTokenGuard) else open_routes).append(route.path)
    expected = {"status", "model/parse", "model/train", "model", "domain"}
    expected |= {
        f"conversations/<conversation_id:path>/{rest}"
        for rest in ("tracker/events", "messages", "execute", "story")
    }
    assert expected <= {path.strip("/") for path in guarded}, guarded
    # The rest take the default 64 KiB: Rasa's open routes, and sanic-jwt's own /auth routes
    # (Rasa's authenticate refuses every login there).
    open_paths = {path.strip("/") for path in open_routes}
    assert open_paths <= {"", "version", "auth", "auth/me", "auth/verify"}, open_routes


@pytest.mark.unit
async def test_the_body_of_an_unauthenticated_request_is_never_read() -> None:
    """Before (rasa run --enable-api): three 95 MB bodies without credentials grew the server by
    280-330 MiB, read whole before Rasa's 401; a stalled body stayed open past 300 s."""
    app = _rasa_app()
    port = free_port()
    server = await serve_app(app, port)
    try:
        huge = b'{"text": "' + b"x" * HUGE + b'"}'
        for headers in ("", "Authorization: Bearer not-a-jwt\r\n"):
            status, seconds, reply = await _posted(port, "/model/parse", huge, headers)
            assert (status, b"NotAuthenticated" in reply) == (401, True)
            assert seconds < 2, "the connection of a refused body closes at once"
        status, _, _ = await _posted(port, "/model/parse?token=wrong", huge)
        assert status == 401
        # Admitted: the body is read and Rasa's own handler answers (no model loaded: 409).
        small = b'{"text": "hello"}'
        assert (await _posted(port, f"/model/parse?token={TOKEN}", small))[0] == 409
        admin = f"Authorization: Bearer {_jwt('admin')}\r\n"
        assert (await _posted(port, "/model/parse", small, admin))[0] == 409
        # A user's JWT passes the head check; Rasa's scope check still refuses another's tracker.
        user = f"Authorization: Bearer {_jwt('user', 'alice')}\r\n"
        status, _, _ = await _posted(port, "/conversations/bob/tracker/events", b"[]", user)
        assert status == 403
    finally:
        server.close()
        await server.wait_closed()
