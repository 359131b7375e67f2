"""The Rasa channel ``chatwoot``: Chatwoot as the agent desk (options: :mod:`.options`).

With this channel in credentials.yml, every replica mirrors hand-offs into the Chatwoot API
inbox (:mod:`.desk`) and agents answer there; the embedded inbox then only shows conversations
(Chatwoot owns the agent side). Its one route takes Chatwoot's webhooks:

- ``POST /webhooks/chatwoot/webhook`` (signed: ``X-Chatwoot-Signature``), or
  ``POST /webhooks/chatwoot/webhook/<secret>`` when ``webhook_url_secret`` is set;

what its head shows checked before its body is read (the secret URL, the signature headers'
presence and age), the body bounded in size and time (:mod:`connectors.http_limits`, as every
route), then verified before it is parsed (:mod:`.auth`), refused when replayed (a delivery or
signature already taken), and carried out (:mod:`.agent_actions`). Answers: 200 (done, or
nothing to do: ``{"result": "ignored"}``), 400, 401 (verification failed), 404 (a conversation
never handed off), 409 (a replay), 408/413 (body), 503 (Redis; Chatwoot may retry), each
``{"error": reason}`` or ``{"result": …, "detail": …}``. A refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.chatwoot.agent_actions import AgentActions
from connectors.chatwoot.auth import WebhookRefused, WebhookVerifier
from connectors.chatwoot.desk import CHATWOOT, ChatwootDesk
from connectors.chatwoot.options import SECTION, ChatwootOptions
from connectors.chatwoot.wire import BadPayload, parse_event
from connectors.drain import drain_before_stop
from connectors.handoff.engine import handoff_engine
from connectors.http_limits import ChannelBlueprint, bounded_body
from omnichannel import metrics
from omnichannel.erasure import register_eraser
from omnichannel.handoff.state import TransitionRefused
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.settings import load_settings

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}


def _error(status: int, reason: str, outcome: str) -> HTTPResponse:
    metrics.CHATWOOT_WEBHOOKS.labels(outcome=outcome).inc()
    return response.json({"error": reason}, status=status, headers=NO_STORE)


class ChatwootInput(InputChannel):
    """Rasa input channel ``chatwoot``; credentials.yml: ``connectors.chatwoot.channel.
    ChatwootInput`` (:class:`~connectors.chatwoot.options.ChatwootOptions`)."""

    def __init__(self, options: ChatwootOptions, redis_url: Optional[str]) -> None:
        self.options = options
        self.desk = ChatwootDesk(options, redis_url)
        self.verifier = WebhookVerifier(
            options.secret("webhook_secret"),
            options.secret("webhook_url_secret"),
            options.webhook_max_age_seconds,
        )
        self.actions = AgentActions(options, self.desk.state, handoff_engine)

    @classmethod
    def name(cls) -> str:
        return CHATWOOT

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> ChatwootInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(ChatwootOptions.parse(SECTION, given), load_settings().redis_url)

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_chatwoot", __name__)

        @bp.listener("after_server_start")
        async def start(app: Sanic, _: Any) -> None:
            engine = handoff_engine()
            engine.start(app.ctx)
            await engine.add_desk(self.desk)
            # An erasure also drops the link Chatwoot's conversation number keeps back to ours.
            register_eraser("chatwoot", self.desk.state.forget)

        bounded = bounded_body(self.options.max_body_bytes, admit=self.admit)

        @bp.route("/webhook", methods=["POST"])
        @bounded
        async def webhook(request: Request) -> HTTPResponse:
            return await self.receive(request, None)

        if self.options.webhook_url_secret is not None:

            @bp.route("/webhook/<secret:str>", methods=["POST"])
            @bounded
            async def webhook_at_secret_url(request: Request, secret: str) -> HTTPResponse:
                return await self.receive(request, secret)

        drain_before_stop(bp)
        return bp

    def admit(self, request: Request) -> Optional[HTTPResponse]:
        """The head's checks (:meth:`~.auth.WebhookVerifier.check_head`), before the body."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            self.verifier.check_head(headers, request.match_info.get("secret"), time.time())
        except WebhookRefused as refusal:
            logger.warning("Chatwoot webhook refused: %s", refusal.reason)
            return _error(refusal.status, refusal.reason, "refused")
        return None

    async def receive(self, request: Request, url_secret: Optional[str]) -> HTTPResponse:
        """One webhook delivery (see the module docstring). The URL's secret is never logged."""
        body = request.body or b""
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            delivery = self.verifier.verify(headers, url_secret, body, time.time())
        except WebhookRefused as refusal:
            logger.warning("Chatwoot webhook refused: %s", refusal.reason)
            return _error(refusal.status, refusal.reason, "refused")
        try:
            event = parse_event(body)
        except BadPayload as error:
            return _error(400, str(error), "bad_request")
        ttl = 2 * self.options.webhook_max_age_seconds + 60
        try:
            if not await self.desk.state.take_delivery(
                delivery.delivery_id, delivery.signature, ttl
            ):
                logger.warning("Chatwoot webhook refused: a replay (%s)", event.event)
                return _error(409, "this delivery was taken already", "replayed")
            try:
                outcome = await self.actions.handle(event)
            except BaseException:
                await self.desk.state.release_delivery(delivery.delivery_id, delivery.signature)
                raise
        except (StateUnavailable, *REDIS_FAILURES, asyncio.TimeoutError) as error:
            logger.error("Chatwoot webhook %s failed: %s", event.event, type(error).__name__)
            return _error(503, "try again later", "failed")
        except LookupError as error:
            return _error(404, str(error), "unknown")
        except TransitionRefused as error:
            return _error(409, str(error), "failed")
        metrics.CHATWOOT_WEBHOOKS.labels(
            outcome={"acted": "acted", "not_sent": "acted"}.get(outcome.result, outcome.result)
        ).inc()
        if outcome.status >= 400:
            await self.desk.state.release_delivery(delivery.delivery_id, delivery.signature)
        return response.json(
            {"result": outcome.result, "detail": outcome.detail},
            status=outcome.status,
            headers=NO_STORE,
        )
