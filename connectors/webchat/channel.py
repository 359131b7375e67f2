"""The Rasa input channel ``webchat``: its options, its routes and the widget's files.

Routes (under ``/webhooks/webchat``):

- ``GET /``: the widget page; ``GET /static/<file>``: its script and stylesheet.
- ``POST /session``: a signed anonymous session token, when ``WEBCHAT_ALLOW_ANONYMOUS`` is on.
- ``WS /ws``: the chat (one :class:`~connectors.webchat.connection.ChatConnection` per socket).
- ``POST /files``: a file the customer attaches (raw body, ``X-File-Name``), with the chat token
  as ``Authorization: Bearer``; bounded and checked by its bytes (omnichannel/uploads.py),
  answered with its ``media`` description; the next message frame names it in
  ``attachments``. ``GET /files/<upload id>``: the file back to the same conversation, with a
  safe type and headers.

While the server drains (:mod:`connectors.drain`), a new socket is closed with 1012 at once and
each open one once its accepted messages are answered (or handed off, at the drain's bound); the
widget reconnects (to another replica) and resends what was not acknowledged.

Once the server runs, it takes over the chat messages other replicas accepted and did not finish
(:class:`~connectors.webchat.turns.ChatTurnResumer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Set
from urllib.parse import unquote

from pydantic import Field
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Sanic, response
from sanic.request import Request

from connectors.drain import CLOSE_SERVICE_RESTART, Drain, drain_before_stop, drain_of
from connectors.forwarded import client_address
from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.static_pages import add_page_routes
from connectors.webchat.auth import ANONYMOUS_TOKEN_LIFETIME, AuthRefused, TokenVerifier
from connectors.webchat.connection import ChatConnection
from connectors.webchat.state import SessionBucket, SessionLimits
from connectors.webchat.turns import ChatTurnResumer, chat_turns
from connectors.webchat.wire import FILES_PATH, MAX_HISTORY_LIMIT
from omnichannel import metrics
from omnichannel.channels import CHAT, WEBCHAT
from omnichannel.customer_tokens import MAX_TOKEN_LIFETIME
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.settings import Settings, load_settings
from omnichannel.tasks import BackgroundTasks
from omnichannel.uploads import MAX_UPLOAD_BYTES, UploadRefused, UploadStore, safe_headers

logger = logging.getLogger(__name__)

SECTION = "connectors.webchat.channel.WebChatInput"
#: How long an upload of up to MAX_UPLOAD_BYTES may take to arrive (a slow mobile link).
UPLOAD_SECONDS = 60.0
#: POST /session takes no body; the widget sends none.
SESSION_BODY_MAX_BYTES = 1024
DAY = 24 * 3600

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "widget.js": "application/javascript; charset=utf-8",
    "widget.css": "text/css; charset=utf-8",
}
#: The page loads nothing from elsewhere; bot images may come from any https host.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


class WebChatOptions(ConnectorOptions):
    """Tunables from credentials.yml (secrets come from the environment, never from here)."""

    #: Messages in the history page sent on connect (and in older pages the client asks for
    #: without a ``limit``).
    history_page_size: int = Field(default=50, ge=1, le=MAX_HISTORY_LIMIT)
    #: Seconds a new socket has to send its auth frame.
    auth_timeout: float = Field(default=10.0, gt=0, le=120)
    #: Frames one session (all its sockets, on every replica) may send at once, then
    #: ``rate_limit_per_second``.
    rate_limit_burst: int = Field(default=10, ge=1, le=1000)
    rate_limit_per_second: float = Field(default=1.0, gt=0, le=1000)
    #: How long a client message id is remembered (its chat_turn record is kept): a resend
    #: within it is not run again.
    client_message_id_ttl: int = Field(default=DAY, ge=60, le=30 * DAY)
    anonymous_token_lifetime: int = Field(default=ANONYMOUS_TOKEN_LIFETIME, ge=60, le=365 * DAY)
    #: Tokens whose ``exp`` lies further ahead are refused (host-site and anonymous alike).
    max_token_lifetime: int = Field(default=MAX_TOKEN_LIFETIME, ge=60, le=365 * DAY)
    #: Open sockets one session (the user or visitor a token names) may hold, across replicas.
    max_sockets_per_session: int = Field(default=10, ge=1, le=1000)
    #: Anonymous session tokens one client address may get per minute, across replicas.
    anonymous_sessions_per_minute: int = Field(default=10, ge=1, le=10_000)
    #: The ``aud`` claim host-site tokens must carry; unset: not checked.
    jwt_audience: Optional[str] = Field(default=None, min_length=1, max_length=200)


class WebChatInput(InputChannel):
    """Rasa input channel ``webchat``; credentials.yml: ``connectors.webchat.channel.WebChatInput``
    (its options: :class:`WebChatOptions`)."""

    def __init__(self, settings: Settings, options: WebChatOptions) -> None:
        settings.require("WEBCHAT_JWT_SECRET")
        if options.anonymous_token_lifetime > options.max_token_lifetime:
            raise ConfigError(
                f"{SECTION}: anonymous_token_lifetime must not exceed max_token_lifetime"
            )
        self.options = options
        self.redis_url = settings.redis_url
        self.verifier = TokenVerifier(
            settings.webchat_jwt_secret or "",
            settings.webchat_allow_anonymous,
            audience=options.jwt_audience,
            anonymous_lifetime=options.anonymous_token_lifetime,
            max_lifetime=options.max_token_lifetime,
            other_audiences=(settings.inbox_jwt_audience,),
        )
        self.sessions = SessionLimits(
            options.max_sockets_per_session, options.anonymous_sessions_per_minute
        )
        #: Accepted messages, recorded before they are acknowledged (turns.py).
        self.turns = chat_turns(settings.redis_url, options.client_message_id_ttl)
        #: Turn workers of sockets, kept until their accepted turns are done (even once closed).
        self.turn_workers = BackgroundTasks("web chat")
        #: Sockets' lease renewals (they end with the sockets' accepted messages).
        self.lease_renewals = BackgroundTasks("web chat leases", in_flight=False)
        #: This process's open sockets, closed with 1012 when it drains.
        self.connections: Set[ChatConnection] = set()
        #: Connections whose turn worker runs (a closed socket's, until its turns are done).
        self.workers: Set[ChatConnection] = set()
        #: The server's drain, known once it starts.
        self.drain: Optional[Drain] = None

    @property
    def draining(self) -> bool:
        return self.drain is not None and self.drain.draining

    async def _close_sockets(self, deadline: float) -> None:
        """The drain's web chat step: every socket closes with 1012 once its accepted messages
        are answered or, just before ``deadline``, handed off; a closed socket's messages still
        waiting are handed off too."""
        open_now = list(self.connections)
        closed = [connection for connection in self.workers if connection not in open_now]
        await asyncio.gather(
            *(connection.close_for_restart(deadline) for connection in open_now),
            *(connection.settle(deadline) for connection in closed),
        )

    @classmethod
    def name(cls) -> str:
        return WEBCHAT

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> WebChatInput:
        # A key left empty in credentials.yml takes its default.
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(load_settings(), WebChatOptions.parse(SECTION, given))

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        """The routes. Turns run on Rasa's agent through ``handle_once`` (turns.py), not
        through ``on_new_message``: a message that may run on two replicas is processed once."""
        bp = ChannelBlueprint("omni_webchat", __name__)

        @bp.listener("before_server_start")
        async def start(app: Sanic, _: Any) -> None:
            self.drain = drain_of(app)
            self.drain.add_step(self._close_sockets)

        @bp.listener("after_server_start")
        async def take_over_chat_turns(app: Sanic, _: Any) -> None:
            self.turns.resume_with(
                ChatTurnResumer(self.turns, lambda: getattr(app.ctx, "agent", None))
            )

        add_page_routes(bp, STATIC_DIR, STATIC_FILES, PAGE_SECURITY_POLICY)

        @bp.route("/session", methods=["POST"])
        @bounded_body(SESSION_BODY_MAX_BYTES)
        async def session(request: Request) -> Any:
            if not self.verifier.allow_anonymous:
                return response.json({"error": "anonymous chat is disabled"}, status=403)
            try:
                wait = await self.sessions.allow_new_session(
                    redis_client(self.redis_url), client_address(request)
                )
            except REDIS_FAILURES as error:
                logger.error("web chat: session limit unavailable: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503)
            if wait is not None:
                return response.json(
                    {"error": "too many new chat sessions from this address"},
                    status=429,
                    headers={"Retry-After": str(int(wait + 0.999))},
                )
            token, expires_at = self.verifier.issue_anonymous()
            return response.json(
                {"token": token, "expires_at": expires_at},
                headers={"Cache-Control": "no-store"},
            )

        @bp.route("/session", methods=["DELETE"], name="end_session")
        async def end_session(request: Request) -> Any:
            """Revokes the anonymous token in ``Authorization: Bearer`` (the widget's "end
            chat"): its sockets close, it opens no new one."""
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return response.json({"error": "send the token as a Bearer token"}, status=401)
            try:
                identity = self.verifier.verify(token.strip())
            except AuthRefused as refused:
                return response.json({"error": refused.reason}, status=401)
            if not identity.anonymous:
                return response.json(
                    {"error": "only anonymous sessions end here; the host site ends its own"},
                    status=400,
                )
            try:
                await self.sessions.revoke(
                    redis_client(self.redis_url),
                    identity.address,
                    identity.expires_at - time.time(),
                )
            except REDIS_FAILURES as error:
                logger.error("web chat: revocation failed: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503)
            return response.empty()

        @bp.route("/files", methods=["POST"])
        @bounded_body(MAX_UPLOAD_BYTES, admit=self._token_refusal, deadline=UPLOAD_SECONDS)
        async def upload(request: Request) -> Any:
            """A file the customer attaches; refused (4xx with a reason) unless its bytes are a
            photo or a PDF within the size bound (a larger body is refused before it is read
            whole, by the server's HTTP edge)."""
            found = await self._file_session(request)
            if isinstance(found, response.HTTPResponse):
                return found
            name = unquote(request.headers.get("x-file-name") or "")[:300]
            try:
                stored = await UploadStore(redis_client(self.redis_url)).put(
                    found, request.body or b"", name
                )
            except UploadRefused as refused:
                status = {"too_large": 413, "type": 415}.get(refused.code, 400)
                return response.json({"error": str(refused), "code": refused.code}, status=status)
            except REDIS_FAILURES as error:
                logger.error("web chat: upload not kept: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503)
            return response.json(
                stored.media(f"{FILES_PATH}/{stored.upload_id}"),
                status=201,
                headers={"Cache-Control": "no-store"},
            )

        @bp.route("/files/<upload_id>", methods=["GET"])
        async def download(request: Request, upload_id: str) -> Any:
            found = await self._file_session(request)
            if isinstance(found, response.HTTPResponse):
                return found
            try:
                stored = await UploadStore(redis_client(self.redis_url)).get(found, upload_id)
            except REDIS_FAILURES as error:
                logger.error("web chat: upload unread: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503)
            if stored is None:
                return response.json({"error": "no such file in this conversation"}, status=404)
            return response.raw(stored.data, headers=safe_headers(stored.content_type, stored.name))

        @bp.websocket("/ws")
        async def chat(request: Request, ws: Any) -> None:
            if self.draining:
                await ws.close(CLOSE_SERVICE_RESTART, "server restarting; reconnect")
                return
            connection = ChatConnection(ws, self, request.app.ctx.agent)
            self.connections.add(connection)
            try:
                with metrics.OPEN_CHAT_SOCKETS.track_inprogress():
                    await connection.run()
            finally:
                self.connections.discard(connection)

        drain_before_stop(bp)  # after the socket route: see connectors.drain on listener order
        return bp

    def _token_refusal(self, request: Request) -> Optional[response.HTTPResponse]:
        """A file request without a valid chat token, refused on its head (401)."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return response.json({"error": "send the chat token as a Bearer token"}, status=401)
        try:
            self.verifier.verify(token.strip())
        except AuthRefused as refused:
            return response.json({"error": refused.reason}, status=401)
        return None

    async def _file_session(self, request: Request) -> Any:
        """The conversation of the chat token in ``Authorization: Bearer`` (as the socket
        resolves it), or the error response: no or a bad token (401), an ended session (401),
        too many requests (429, the session's frame rate), Redis unavailable (503)."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return response.json({"error": "send the chat token as a Bearer token"}, status=401)
        try:
            identity = self.verifier.verify(token.strip())
        except AuthRefused as refused:
            return response.json({"error": refused.reason}, status=401)
        redis = redis_client(self.redis_url)
        bucket = SessionBucket(
            self.redis_url,
            identity.address,
            self.options.rate_limit_burst,
            self.options.rate_limit_per_second,
        )
        try:
            if await self.sessions.revoked(redis, identity.address):
                return response.json({"error": "this chat session has ended"}, status=401)
            wait = await bucket.take()
            if wait > 0:
                return response.json(
                    {"error": "too many requests"},
                    status=429,
                    headers={"Retry-After": str(int(wait + 0.999))},
                )
            return await IdentityStore(redis).resolve_conversation(
                identity.address, channel=CHAT, link_to=identity.link_to
            )
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error("web chat: file request: state unavailable: %s", type(error).__name__)
            return response.json({"error": "try again later"}, status=503)
