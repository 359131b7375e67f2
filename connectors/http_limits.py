"""The HTTP edge of the Rasa server: every request, webhook or Rasa's own API, bounded before work.

Sanic 21.12 (Rasa 3.6's) reads a route's whole body before the handler runs (up to 100 MB),
times a request head only between bytes (a byte every few seconds holds a connection for ever),
gives a body the handler stage's hour, drains the unread rest of a body it has answered, and
answers a malformed ``Content-Length`` with a 500. :func:`install` puts one mechanism in front
of every route of the app, Rasa's HTTP API included, through Sanic's request signals:

- **Request heads** (``http.lifecycle.begin``/``request``/``response``): from the moment a
  connection may send a request (it opened, or its last response went out) its whole head must
  arrive within :data:`HEAD_DEADLINE_SECONDS`, however slowly it trickles; an idle kept-alive
  connection is closed then, a half-sent head gets a 408. A connection whose head arrived is
  the route's (SSE streams and WebSockets run on).
- **Framing** (when the head arrives, before Sanic reads it): one ``Content-Length`` of digits,
  or ``Transfer-Encoding: chunked`` alone; anything else (``5, 5``, both headers, another
  coding) is a 400 or 501, and the connection closes.
- **Bodies** (``http.routing.after``, after routing, before Sanic would buffer the body): the
  route's :class:`BodyPolicy` decides. Its ``admit`` check runs on the head alone (credentials
  that need no body: VAPI's Bearer key, Rasa's token, the viewer's token), so an
  unauthenticated client is refused before a byte of its body is read; a ``Content-Length``
  over the route's limit is a 413 before reading, a chunked body stops at the limit, and a body
  not in within the policy's deadline is a 408. Routes declare their policy with
  :func:`bounded_body`; Rasa's token-protected API routes get theirs from
  :mod:`connectors.rasa_api`; every other route (Rasa's own channels, a GET with a body) gets
  :data:`DEFAULT_POLICY`.
- **JSON depth**: a body that is JSON is refused with a 400 when it nests deeper than
  :data:`omnichannel.bounded_json.MAX_DEPTH`, before any handler parses it.
- **No draining**: an answer given while the body is still unread (any refusal, a 404) closes
  the connection instead of reading the rest of the body for as long as the client takes.

The channels' blueprints are :class:`ChannelBlueprint`, which installs all of this (once) on
the app they are registered with, together with the proxy settings (:mod:`connectors.forwarded`)
and the WebSocket patch (:mod:`connectors.sanic_patches`). The code reads a few of Sanic
21.12.2's internals (the connection's stage, the request's stream): the patches' version check
covers it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import weakref
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, Awaitable, Callable, Optional, Union

from sanic import Blueprint, Sanic, response
from sanic.exceptions import PayloadTooLarge, RequestTimeout
from sanic.http import Stage
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors import forwarded, rasa_api, sanic_patches
from omnichannel import bounded_json, tracing
from omnichannel.settings import load_settings

logger = logging.getLogger(__name__)

#: How long a client has to send a whole body once its head arrived (unless a route says).
BODY_DEADLINE_SECONDS = 10.0
#: How long a connection has to send a request head, counted from when it may send one.
HEAD_DEADLINE_SECONDS = 10.0
#: The body limit of a route that declares none (Rasa's own channels, an unknown route).
DEFAULT_MAX_BYTES = 64 * 1024

_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")

Admit = Callable[[Request], Union[Optional[HTTPResponse], Awaitable[Optional[HTTPResponse]]]]
Refuse = Callable[[int, str], HTTPResponse]


def json_refusal(status: int, reason: str) -> HTTPResponse:
    """The default refusal: ``{"error": reason}``."""
    return response.json({"error": reason}, status=status)


@dataclass(frozen=True)
class BodyPolicy:
    """How much body a route takes, how fast, and whether the head earns reading it.

    ``admit`` sees the request before its body: it returns None to go on or the response that
    refuses (for example a 401 when the credentials, which travel in headers, are wrong).
    ``refuse`` formats the refusals of size, time and JSON depth in the route's wire format.
    """

    max_bytes: int
    deadline: float = BODY_DEADLINE_SECONDS
    admit: Optional[Admit] = None
    refuse: Refuse = json_refusal


DEFAULT_POLICY = BodyPolicy(DEFAULT_MAX_BYTES)


def bounded_body(
    max_bytes: int,
    *,
    admit: Optional[Admit] = None,
    deadline: float = BODY_DEADLINE_SECONDS,
    refuse: Refuse = json_refusal,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares a route handler's :class:`BodyPolicy`; the handler then finds its body read
    (``request.body``) and checked when it runs."""
    policy = BodyPolicy(max_bytes, deadline, admit, refuse)

    def declare(handler: Callable[..., Any]) -> Callable[..., Any]:
        handler.body_policy = policy  # type: ignore[attr-defined]
        return handler

    return declare


def policy_of(handler: Any) -> BodyPolicy:
    """The route's policy: its own, Rasa's API's, or the default."""
    own = getattr(handler, "body_policy", None)
    if isinstance(own, BodyPolicy):
        return own
    guard = rasa_api.token_guard(handler) if handler is not None else None
    if guard is not None:
        return BodyPolicy(
            guard.app.config.REQUEST_MAX_SIZE,
            rasa_api.AUTHENTICATED_BODY_SECONDS,
            admit=guard,
        )
    return DEFAULT_POLICY


class Refused(Exception):
    """Raised inside a signal to answer ``answer`` (the app's handler below sends it)."""

    def __init__(self, answer: HTTPResponse) -> None:
        super().__init__(answer.status)
        self.answer = answer


def framing_error(request: Request) -> Optional[HTTPResponse]:
    """What is wrong with how the head says its body is framed, as the refusal; None if fine.

    Sanic parses ``Content-Length`` with ``int()`` after this point, outside its own error
    handling: ``5, 5``, ``+5`` or a missing length under an unknown coding end in a 500.
    Two framings at once are how requests are smuggled past a proxy (RFC 9112, 6.1 and 6.3).
    """
    lengths = request.headers.getall("content-length", [])
    codings = request.headers.getall("transfer-encoding", [])
    if codings:
        if lengths:
            return json_refusal(400, "both Content-Length and Transfer-Encoding")
        if codings != ["chunked"]:
            return json_refusal(501, "only Transfer-Encoding: chunked is supported")
    if len(lengths) > 1:
        return json_refusal(400, "more than one Content-Length")
    if lengths and not _CONTENT_LENGTH.fullmatch(lengths[0]):
        return json_refusal(400, "malformed Content-Length")
    return None


async def read_routed_body(request: Request, policy: BodyPolicy) -> None:
    """Reads the body into ``request.body`` under ``policy``; Refused otherwise."""
    if policy.admit is not None:
        with tracing.span("connector.auth") as span:
            refusal = policy.admit(request)
            if isawaitable(refusal):
                refusal = await refusal
            span.set(admitted=refusal is None)
        if refusal is not None:
            raise Refused(refusal)
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > policy.max_bytes:
        raise Refused(policy.refuse(413, f"request body larger than {policy.max_bytes} bytes"))
    assert request.stream is not None  # a route with a body policy is registered streamed
    request.stream.request_max_size = policy.max_bytes
    try:
        await asyncio.wait_for(request.receive_body(), policy.deadline)
    except PayloadTooLarge:
        raise Refused(
            policy.refuse(413, f"request body larger than {policy.max_bytes} bytes")
        ) from None
    except asyncio.TimeoutError:
        raise Refused(
            policy.refuse(408, f"request body not received within {policy.deadline:.0f} s")
        ) from None
    body = request.body or b""
    if body.lstrip()[:1] in (b"{", b"["):
        try:
            bounded_json.loads(body)
        except bounded_json.TooDeep as error:
            raise Refused(policy.refuse(400, str(error))) from None
        except ValueError:
            pass  # not JSON after all: the route's own parser answers that


class HeadDeadlines:
    """Closes connections whose next request head is not in within ``seconds``.

    A connection waits for a head from the moment it opens and from each response on (the
    ``http.lifecycle.response`` signal fires when the handler is done, just before the last
    bytes go out); the signals run inside the connection's task, which identifies it. When the
    time is up and no head arrived, the task is cancelled, which makes Sanic close the
    connection: silently when nothing came, with a 408 when part of a head did.
    """

    def __init__(self, seconds: float = HEAD_DEADLINE_SECONDS) -> None:
        self.seconds = seconds
        self._waits: weakref.WeakKeyDictionary[asyncio.Task, int] = weakref.WeakKeyDictionary()
        self._serials = itertools.count()

    def waiting(self) -> None:
        """The current connection may send a request head from now on."""
        task = asyncio.current_task()
        if task is not None:
            self._arm(task)

    def received(self) -> None:
        """The current connection's head arrived."""
        task = asyncio.current_task()
        if task is not None:
            self._waits.pop(task, None)

    def _arm(self, task: asyncio.Task) -> None:
        serial = next(self._serials)
        self._waits[task] = serial
        asyncio.get_running_loop().call_later(self.seconds, self._expire, task, serial)

    def _expire(self, task: asyncio.Task, serial: int) -> None:
        if task.done() or self._waits.get(task) != serial:
            return
        http = getattr(_protocol_of(task), "_http", None)
        if http is None:
            return
        if http.stage in (Stage.HANDLER, Stage.RESPONSE):
            # The last response is still being written (a slow reader): time from now on.
            self._arm(task)
            return
        del self._waits[task]
        if http.stage is Stage.REQUEST:
            http.exception = RequestTimeout(
                f"request head not received within {self.seconds:.0f} s"
            )
        logger.info("closing a connection: no request head within %.0f s", self.seconds)
        task.cancel()


def _protocol_of(task: asyncio.Task) -> Any:
    """The Sanic protocol whose ``connection_task`` the task runs (its coroutine's ``self``)."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    return frame.f_locals.get("self") if frame is not None else None


def _route_span_name(route_name: str) -> str:
    """A POST route's root span: ``omni_twilio_sms.webhook`` for Sanic's
    ``<app>.omni_twilio_sms.webhook`` (route names are a fixed set)."""
    return route_name.split(".", 1)[-1]


def install(app: Sanic) -> None:
    """Puts the mechanism of the module docstring in front of every route of ``app`` (once)."""
    if getattr(app.ctx, "omni_http_limits", False):
        return
    sanic_patches.install()
    rasa_api.check_version()
    forwarded.configure(app, load_settings().trusted_proxy_hops)
    heads = HeadDeadlines()

    async def connection_opened(**_: Any) -> None:
        heads.waiting()

    async def head_received(request: Request, **_: Any) -> None:
        heads.received()
        refusal = framing_error(request)
        if refusal is not None:
            raise Refused(refusal)

    async def routed(request: Request, route: Any, handler: Any, **_: Any) -> None:
        stream = request.stream
        if tracing.enabled() and request.method == "POST" and ".omni_" in route.name:
            # The request's root span, current for the handler (this signal runs inline in the
            # request's task); ended when the response is on its way.
            request.ctx.omni_trace = tracing.request_span(_route_span_name(route.name))
        if stream is None or not stream.request_body or route.ctx.ignore_body:
            return
        await read_routed_body(request, policy_of(handler))

    async def answered(request: Request, response: Any = None, **_: Any) -> None:
        trace = getattr(request.ctx, "omni_trace", None)
        if trace is not None:
            request.ctx.omni_trace = None
            trace.end(getattr(response, "status", None))
        stream = request.stream
        if stream is not None and stream.request_body:
            # Close rather than read (Sanic would drain the rest for as long as it trickles).
            stream.keep_alive = False
            stream.request_body = None
            stream.expecting_continue = False
        heads.waiting()

    async def refused(_: Request, exception: Refused) -> HTTPResponse:
        return exception.answer

    app.signal("http.lifecycle.begin")(connection_opened)
    app.signal("http.lifecycle.request")(head_received)
    app.signal("http.routing.after")(routed)
    app.signal("http.lifecycle.response")(answered)
    app.exception(Refused)(refused)
    app.ctx.omni_http_limits = True


class ChannelBlueprint(Blueprint):
    """A channel's blueprint: registering it installs the server's HTTP edge on the app."""

    def register(self, app: Sanic, options: Any) -> None:
        install(app)
        super().register(app, options)
