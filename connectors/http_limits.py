"""Bounded request bodies for the webhook routes: refused before they are buffered.

Sanic reads a route's whole body before the handler runs, up to its global limit (100 MB), and
while it waits for a body that trickles in, no timeout applies (the handler stage only has
Rasa's hour-long response timeout). The webhook routes are therefore registered with
``stream=True`` and read their body here instead: a ``Content-Length`` above the route's limit is
refused before a byte of the body is read, a chunked body stops at the limit, and a body that
has not fully arrived within ``BODY_DEADLINE_SECONDS`` is refused and its connection closed.
Each route's limit is its channel's real maximum (a VAPI custom-LLM request, a VAPI server
message, a Twilio webhook).

Sanic's request timeout restarts with every byte received, so a client sending one header byte
every few seconds holds a connection forever. :func:`guard_slow_headers` gives every new
connection ``HEADER_DEADLINE_SECONDS`` to deliver its first request head, whatever the route;
once a head has arrived the connection is the route's (SSE streams and WebSockets run on).
Later heads on a kept-alive connection are not timed here: a proxy in front (nginx
``client_header_timeout``, HAProxy ``timeout http-request``) bounds those.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from sanic import Blueprint
from sanic.exceptions import PayloadTooLarge
from sanic.request import Request

logger = logging.getLogger(__name__)

#: How long a client has to send a whole body once its headers arrived.
BODY_DEADLINE_SECONDS = 10.0
#: How long a new connection has to send its first request head.
HEADER_DEADLINE_SECONDS = 10.0


@dataclass(frozen=True)
class BodyRefused(Exception):
    """The body was not read: ``status`` and ``reason`` are what to answer."""

    status: int
    reason: str


async def read_body(
    request: Request, max_bytes: int, deadline: float = BODY_DEADLINE_SECONDS
) -> bytes:
    """The request's body, at most ``max_bytes``, received within ``deadline`` seconds.

    Raises BodyRefused (413, 408 or 400). After a refusal the connection is not kept alive:
    the rest of a body that is too large or too slow is never read.
    """
    stream = request.stream
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            _close_after_response(request)
            raise BodyRefused(400, "malformed Content-Length")
        if int(declared) > max_bytes:
            _close_after_response(request)
            raise BodyRefused(413, f"request body larger than {max_bytes} bytes")
    if stream is None:
        return request.body or b""
    stream.request_max_size = max_bytes
    try:
        await asyncio.wait_for(request.receive_body(), deadline)
    except PayloadTooLarge:
        _close_after_response(request)
        raise BodyRefused(413, f"request body larger than {max_bytes} bytes") from None
    except asyncio.TimeoutError:
        _close_after_response(request)
        raise BodyRefused(408, f"request body not received within {deadline:.0f} s") from None
    return request.body or b""


def _close_after_response(request: Request) -> None:
    """Answer, then close: Sanic would otherwise read (drain) the unread rest of the body
    before the next request on the connection, for as long as the client takes."""
    stream = request.stream
    if stream is not None:
        stream.keep_alive = False
        stream.request_body = None


#: Connection tasks still waiting for their first request head (weak: a closed one goes).
_awaiting_head: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def guard_slow_headers(bp: Blueprint, deadline: float = HEADER_DEADLINE_SECONDS) -> None:
    """Closes connections whose first request head is not in within ``deadline`` seconds.

    Blueprint signals fire for every connection of the app; each channel's blueprint calls this,
    and the first handler to see a connection arms its timer, so one channel is enough. Both
    signals run inside the connection's own task, which identifies the connection.
    """

    @bp.signal("http.lifecycle.begin")
    async def arm(conn_info: Any, **_: Any) -> None:
        if getattr(conn_info.ctx, "omni_head_deadline", False):
            return
        conn_info.ctx.omni_head_deadline = True
        connection = asyncio.current_task()
        if connection is not None:
            _awaiting_head.add(connection)
            asyncio.get_running_loop().call_later(deadline, _expire, connection, conn_info)

    @bp.signal("http.lifecycle.request")
    async def head_received(**_: Any) -> None:
        connection = asyncio.current_task()
        if connection is not None:
            _awaiting_head.discard(connection)


def _expire(connection: asyncio.Task[Any], conn_info: Any) -> None:
    """Cancelling the connection's task makes Sanic close its transport."""
    if connection.done() or connection not in _awaiting_head:
        return
    _awaiting_head.discard(connection)
    logger.info("closing a connection from %s: no request head in time", conn_info.client_ip)
    connection.cancel()
