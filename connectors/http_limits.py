"""Bounded request bodies for the webhook routes: refused before they are buffered.

Sanic reads a route's whole body before the handler runs, up to its global limit (100 MB), and
while it waits for a body that trickles in, no timeout applies (the handler stage only has
Rasa's hour-long response timeout). The webhook routes are therefore registered with
``stream=True`` and read their body here instead: a ``Content-Length`` above the route's limit is
refused before a byte of the body is read, a chunked body stops at the limit, and a body that
has not fully arrived within ``BODY_DEADLINE_SECONDS`` is refused and its connection closed.
Each route's limit is its channel's real maximum (a VAPI custom-LLM request, a VAPI server
message, a Twilio webhook).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sanic.exceptions import PayloadTooLarge
from sanic.request import Request

#: How long a client has to send a whole body once its headers arrived.
BODY_DEADLINE_SECONDS = 10.0


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
