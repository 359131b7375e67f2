"""The Rasa input channel ``inbox``: the embedded agent inbox's page, JSON API and socket.

Routes (under ``/webhooks/inbox``); every API route takes ``Authorization: Bearer <agent
JWT>`` (:mod:`.auth`) and a JSON body (:mod:`.requests`), and answers JSON:

- ``GET /``: the page; ``GET /static/<file>``: its script and stylesheet (no data in them).
- ``POST /api/me``: the signed-in agent, and whether a helpdesk owns the agent side.
- ``POST /api/queue``: open hand-offs, waiting ones oldest first, with the customer's last words.
- ``POST /api/conversation``: one hand-off with its timeline page, notes, reply channels and
  the delivery of each agent reply (``conversation_id``, ``before``).
- ``POST /api/claim`` (``take_over`` to take another agent's), ``/api/hand_back``,
  ``/api/resolve``: the hand-off's transitions (409 with the reason when they do not apply).
- ``POST /api/reply``: ``message_id``, ``channel`` (``sms``/``whatsapp``/``chat``), ``text``;
  202 once the reply is recorded (durable: sent once, whatever happens to this replica).
- ``POST /api/preview``: a reply as the channel will render it (SMS parts, segments, encoding;
  WhatsApp bubbles); with ``conversation_id``, also how it would go now (``route``: in
  WhatsApp's window, ``held`` until the customer writes, by SMS instead; or ``refused``).
- ``POST /api/note``: an internal note (``note_id``, ``text``); customers never see notes.
- ``WS /ws``: live updates (:mod:`.live`).

Errors: 401 (no or bad agent token: customers' and operators' tokens included), 400, 404, 409,
413, 503 (Redis), each with ``{"error": reason}``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Type

from pydantic import Field
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.drain import CLOSE_SERVICE_RESTART, drain_before_stop, drain_of
from connectors.event_log.reading import event_log_of
from connectors.handoff.engine import INBOX, HandoffEngine, Unreachable, handoff_engine
from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.inbox import views
from connectors.inbox.auth import AgentRefused, AgentVerifier, SignedInAgent, bearer_token
from connectors.inbox.live import InboxSocket
from connectors.inbox.requests import (
    MAX_BODY_BYTES,
    BadRequest,
    Body,
    Claim,
    Conversation,
    Note,
    Preview,
    Queue,
    Reply,
    TimelinePage,
    parse_body,
)
from connectors.static_pages import add_page_routes
from connectors.viewer.lookup import NotFound
from omnichannel import audit
from omnichannel.channels import SMS, WHATSAPP
from omnichannel.handoff.state import TransitionRefused
from omnichannel.identity import IdentityStore
from omnichannel.metrics import ROUTE_SMS_FALLBACK
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import render_sms
from omnichannel.rendering.whatsapp import render_whatsapp
from omnichannel.settings import Settings, load_settings

logger = logging.getLogger(__name__)

SECTION = "connectors.inbox.channel.InboxInput"
NO_STORE = {"Cache-Control": "no-store"}
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "inbox.js": "application/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
}
#: Nothing from elsewhere, no inline script; images in conversations are shown as links.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

Handler = Callable[[SignedInAgent, Any], Awaitable[Any]]


class InboxOptions(ConnectorOptions):
    """Tunables from credentials.yml."""

    #: Events read for a conversation's timeline page.
    page_events: int = Field(default=300, ge=1, le=5000)
    #: Open hand-offs the queue lists at most.
    queue_limit: int = Field(default=200, ge=1, le=1000)
    #: Seconds a new socket has to send its auth frame.
    auth_timeout: float = Field(default=10.0, gt=0, le=120)


class InboxInput(InputChannel):
    """Rasa input channel ``inbox``; credentials.yml: ``connectors.inbox.channel.InboxInput``
    (its options: :class:`InboxOptions`; agents' tokens: ``INBOX_JWT_SECRET``)."""

    def __init__(self, settings: Settings, options: InboxOptions) -> None:
        self.verifier = AgentVerifier.from_settings(settings)
        self.options = options
        self.redis_url = settings.redis_url
        #: This process's agent sockets, closed with 1012 when it drains.
        self.sockets: Set[InboxSocket] = set()

    @classmethod
    def name(cls) -> str:
        return INBOX

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InboxInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(load_settings(), InboxOptions.parse(SECTION, given))

    @property
    def auth_timeout(self) -> float:
        return self.options.auth_timeout

    @staticmethod
    def engine() -> HandoffEngine:
        return handoff_engine()

    @staticmethod
    def event_log(agent: Any) -> Any:
        return event_log_of(agent, "the agent inbox")

    async def _close_sockets(self, deadline: float) -> None:
        for socket in list(self.sockets):
            await socket._close(CLOSE_SERVICE_RESTART, "server restarting; reconnect")

    # -- routes -----------------------------------------------------------------------------

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_inbox", __name__)

        @bp.listener("before_server_start")
        async def join_drain(app: Sanic, _: Any) -> None:
            drain_of(app).add_step(self._close_sockets)

        @bp.listener("after_server_start")
        async def start(app: Sanic, _: Any) -> None:
            engine = self.engine()
            engine.start(app.ctx)
            await engine.serve(INBOX)

        add_page_routes(bp, STATIC_DIR, STATIC_FILES, PAGE_SECURITY_POLICY)

        def api(path: str, model: Type[Body], handler: Handler, status: int = 200) -> None:
            async def route(request: Request) -> Any:
                return await self._answer(request, model, handler, status)

            route.__name__ = "inbox_" + path.replace("/", "_")
            # The agent's token is checked on the head: no body is read for anyone else.
            bounded = bounded_body(MAX_BODY_BYTES, admit=self._unauthorised)(route)
            bp.add_route(bounded, f"/api/{path}", methods=["POST"])

        agent_of = self._rasa_agent

        async def me(agent: SignedInAgent, _: Any) -> Any:
            return {"agent": agent.actor.as_dict(), "owned_by": self.engine().owning_desk}

        async def queue(_: SignedInAgent, body: Queue) -> Any:
            limit = min(body.limit, self.options.queue_limit)
            return await views.queue(self.engine(), self.event_log(agent_of()), limit)

        async def conversation(agent: SignedInAgent, body: TimelinePage) -> Any:
            page = await views.conversation(
                self.engine(),
                IdentityStore(redis_client(self.redis_url)),
                self.event_log(agent_of()),
                body.conversation_id,
                body.before,
                self.options.page_events,
            )
            # Who read which conversation (omnichannel/audit.py), by the agent's id.
            await audit.record(
                redis_client(self.redis_url),
                f"agent:{agent.actor.id}",
                "inbox.conversation",
                body.conversation_id,
            )
            return page

        async def claim(agent: SignedInAgent, body: Claim) -> Any:
            self._agents_answer_here()
            handoff = await self.engine().claim(
                body.conversation_id, agent.actor, take_over=body.take_over
            )
            return {"handoff": handoff.as_dict()}

        def closing(transition: str) -> Handler:
            """``hand_back`` or ``resolve``: the engine's transition of that name."""

            async def close(agent: SignedInAgent, body: Conversation) -> Any:
                self._agents_answer_here()
                handoff = await getattr(self.engine(), transition)(
                    body.conversation_id, agent.actor
                )
                return {"handoff": handoff.as_dict()}

            return close

        async def reply(agent: SignedInAgent, body: Reply) -> Any:
            self._agents_answer_here()
            new = await self.engine().reply(
                body.conversation_id, agent.actor, body.message_id, body.channel, body.text
            )
            return {"accepted": True, "duplicate": not new, "message_id": body.message_id}

        async def note(agent: SignedInAgent, body: Note) -> Any:
            saved = await self.engine().note(
                body.conversation_id, agent.actor, body.note_id, body.text
            )
            return {"note": saved}

        async def preview(agent: SignedInAgent, body: Preview) -> Any:
            shown = preview_reply(body.channel, body.text, agent.actor.name)
            if body.conversation_id is None:
                return shown
            message = BotMessage(text=body.text.strip(), author=agent.actor.name)
            how = await self.engine().messages.route(body.conversation_id, body.channel, message)
            if how.get("route") == ROUTE_SMS_FALLBACK:
                shown = preview_reply(SMS, body.text, agent.actor.name)  # as it will go
            return {**shown, **how}

        api("me", Queue, me)
        api("queue", Queue, queue)
        api("conversation", TimelinePage, conversation)
        api("claim", Claim, claim)
        api("hand_back", Conversation, closing("hand_back"))
        api("resolve", Conversation, closing("resolve"))
        api("reply", Reply, reply, status=202)
        api("note", Note, note)
        api("preview", Preview, preview)

        @bp.websocket("/ws")
        async def socket(request: Request, ws: Any) -> None:
            await InboxSocket(ws, self, request.app.ctx.agent).run()

        drain_before_stop(bp)
        return bp

    def _rasa_agent(self) -> Any:
        return self.engine().rasa_agent()

    def _agents_answer_here(self) -> None:
        owner = self.engine().owning_desk
        if owner is not None:
            raise TransitionRefused(
                f"agents answer in {owner}; this inbox only shows conversations"
            )

    def _unauthorised(self, request: Request) -> Optional[HTTPResponse]:
        """A request without an agent's token, refused (before its body is read)."""
        try:
            self.verifier.verify(bearer_token(request.headers.get("authorization")))
        except AgentRefused as error:
            return response.json(
                {"error": str(error)},
                status=401,
                headers={**NO_STORE, "WWW-Authenticate": "Bearer"},
            )
        return None

    async def _answer(
        self, request: Request, model: Type[Body], handler: Handler, status: int
    ) -> Any:
        try:
            agent = self.verifier.verify(bearer_token(request.headers.get("authorization")))
        except AgentRefused:
            return self._unauthorised(request)
        try:
            body = parse_body(model, request.body or b"")
            answer = await handler(agent, body)
        except (BadRequest, ValueError) as error:
            return response.json({"error": str(error)}, status=400, headers=NO_STORE)
        except (NotFound, LookupError) as error:
            return response.json({"error": str(error)}, status=404, headers=NO_STORE)
        except (TransitionRefused, Unreachable) as error:
            return response.json({"error": str(error)}, status=409, headers=NO_STORE)
        except (StateUnavailable, *REDIS_FAILURES, asyncio.TimeoutError) as error:
            logger.error("inbox: %s failed: %s", request.path, error)
            return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
        return response.json(answer, status=status, headers=NO_STORE)


def preview_reply(channel: str, text: str, agent_name: str) -> Dict[str, Any]:
    """A reply as ``channel``'s renderer will send it (the agent's name as the customer sees it)."""
    message = BotMessage(text=text.strip(), author=agent_name)
    if channel == SMS:
        parts = [part for part in render_sms([message]).messages if part.body]
        return {
            "channel": SMS,
            "parts": [
                {
                    "body": part.body,
                    "segments": part.segments.segments,
                    "encoding": part.segments.encoding,
                }
                for part in parts
            ],
            "segments": sum(part.segments.segments for part in parts),
            "encoding": "UCS-2"
            if any(part.segments.encoding == "UCS-2" for part in parts)
            else "GSM-7",
        }
    if channel == WHATSAPP:
        bubbles = [bubble for bubble in render_whatsapp([message]).messages if bubble.body]
        return {"channel": WHATSAPP, "bubbles": [{"body": bubble.body} for bubble in bubbles]}
    chat = render_chat(message)
    return {"channel": channel, "text": chat["text"], "html": chat["html"]}
