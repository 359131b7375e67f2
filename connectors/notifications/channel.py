"""The Rasa input channel ``notifications``: the shop's backend sends customers notifications.

Route (under ``/webhooks/notifications``):

- ``POST /send``: ``Authorization: Bearer <NOTIFICATIONS_API_KEY>`` and an ``Idempotency-Key``
  header, both checked on the head before the body is read; a JSON body of at most 8 KiB
  (:mod:`connectors.notifications.wire`). Answers 200 with the notification's final status
  (sent, refused) or 202 when it waits (scheduled, queued for the chat); the same key and body
  again get the first answer; 401 without the key, 400 without an idempotency key or with a
  bad body, 409 while the key's first request still runs, 413 over 8 KiB, 422 for the same key
  with another body, a response designers did not mark sendable or a slot it lacks, 503 when
  Redis or the model is not available. A customer the assistant does not know, or may not
  reach, is answered like any refusal (``not_reachable``), so the API does not tell who exists.

On start it registers the ``notification`` courier on this process's outbound queue and starts
the queue (:func:`omnichannel.outbound.items.outbound_queue`); a drain stops its polling.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Tuple

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.drain import drain_of
from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.notifications.auth import idempotency_problem, is_backend
from connectors.notifications.courier import (
    NOTIFICATION_KIND,
    NotificationCourier,
    domain_of,
    sendable,
)
from connectors.notifications.state import IdempotencyKeys, item_id_of
from connectors.notifications.wire import (
    MAX_REQUEST_BYTES,
    BadRequest,
    NotificationRequest,
    answer,
    body_digest,
    parse_request,
)
from omnichannel.addresses import Address, InvalidAddress, phone_address, user_address
from omnichannel.identity import IdentityStore
from omnichannel.outbound.consent import GRANTED, ConsentStore
from omnichannel.outbound.items import (
    FINAL,
    OutboundItem,
    OutboundQueue,
    outbound_queue,
)
from omnichannel.outbound.policy import NO_ADDRESS, NO_CONSENT, UNKNOWN_CUSTOMER
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.settings import Settings, load_settings
from omnichannel.sms_sender import SmsSender

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

#: What the API says of a customer it may not reach, whatever the reason (unknown, never
#: contacted us and no consent record, nothing on file), so it does not tell who exists.
NOT_REACHABLE = "not_reachable"
_HIDDEN_REASONS = {UNKNOWN_CUSTOMER, NO_CONSENT, NO_ADDRESS}
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _refusal(status: int, reason: str, **headers: str) -> HTTPResponse:
    return response.json({"error": reason}, status=status, headers=headers or None)


class NotificationsInput(InputChannel):
    """Rasa input channel ``notifications``; credentials.yml:
    ``connectors.notifications.channel.NotificationsInput`` (no options)."""

    def __init__(self, settings: Settings) -> None:
        settings.require("NOTIFICATIONS_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
        self.api_key = settings.notifications_api_key or ""
        self.settings = settings
        self.identity = IdentityStore()
        self._queue: Optional[OutboundQueue] = None

    @classmethod
    def name(cls) -> str:
        return "notifications"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> NotificationsInput:
        return cls(load_settings())

    def _admit(self, request: Request) -> Optional[HTTPResponse]:
        """Refusals on the head alone: no key, no idempotency key."""
        if not is_backend(request.headers.get("authorization"), self.api_key):
            return _refusal(
                401,
                "send the notifications API key as a Bearer token",
                **{"WWW-Authenticate": "Bearer"},
            )
        problem = idempotency_problem(request.headers.get("idempotency-key"))
        if problem:
            return _refusal(400, problem)
        return None

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_notifications", __name__)

        @bp.listener("after_server_start")
        async def start(app: Sanic, _: Any) -> None:
            queue = outbound_queue(self.settings.redis_url)
            queue.register(
                NOTIFICATION_KIND,
                NotificationCourier(
                    lambda: self._agent_of(app), queue, SmsSender.from_settings, self.identity
                ),
            )
            queue.start()
            self._queue = queue

            async def stop_polling(deadline: float) -> None:
                await queue.stop()

            drain_of(app).add_step(stop_polling)

        @bp.route("/send", methods=["POST"])
        @bounded_body(MAX_REQUEST_BYTES, admit=self._admit)
        async def send(request: Request) -> HTTPResponse:
            refusal = self._admit(request)
            if refusal is not None:
                return refusal
            try:
                code, body = await self._send(request, self._agent_of(request.app))
            except BadRequest as bad:
                return _refusal(400, str(bad))
            except (StateUnavailable, *REDIS_FAILURES) as error:
                logger.error("notification not taken: %s", type(error).__name__)
                return _refusal(503, "state unavailable, retry with the same Idempotency-Key")
            return response.json(body, status=code)

        return bp

    @staticmethod
    def _agent_of(app: Sanic) -> Agent:
        agent = getattr(app.ctx, "agent", None)
        if agent is None:
            raise StateUnavailable("the model is not loaded yet")
        return agent

    async def _send(self, request: Request, agent: Agent) -> Tuple[int, Dict[str, Any]]:
        queue = self._queue or outbound_queue(self.settings.redis_url)
        parsed = parse_request(request.body, queue.clock())
        problem = self._unsendable(agent, parsed)
        if problem:
            return 422, {"error": problem}
        key = request.headers["idempotency-key"]
        digest = body_digest(request.body)
        keys = IdempotencyKeys(redis_client(self.settings.redis_url))
        earlier = await keys.claim(key, digest)
        if earlier is not None:
            if not earlier.same_body:
                return 422, {"error": "this Idempotency-Key was used with another body"}
            if earlier.answer is None:
                # Still running, or its replica died after recording the notification: then
                # the notification is answered as it stands (another replica sends it).
                found = await self._recorded(queue, parsed, item_id_of(key))
                if found is not None:
                    return found
                return 409, {"error": "the first request with this Idempotency-Key is running"}
            return int(earlier.code or 200), earlier.answer
        try:
            code, body = await self._submit(queue, parsed, item_id_of(key))
        except BaseException:
            await keys.release(key, digest)
            raise
        await keys.finish(key, digest, code, body)
        return code, body

    @staticmethod
    def _unsendable(agent: Agent, parsed: NotificationRequest) -> Optional[str]:
        """Why the request's response may not be sent with its slots, or None."""
        if not sendable(agent, parsed.response):
            return f"{parsed.response} is not a response marked sendable (docs/DESIGNERS.md)"
        slots = {slot.name for slot in domain_of(agent).slots}
        unknown = sorted(set(parsed.slots) - slots)
        if unknown:
            return f"unknown slot(s): {', '.join(name[:64] for name in unknown[:5])}"
        needed = set()
        for variation in domain_of(agent).responses.get(parsed.response) or ():
            needed |= set(_VARIABLE.findall(str(variation.get("text") or "")))
        missing = sorted(needed - set(parsed.slots))
        if missing:
            return f"{parsed.response} needs the slot(s): {', '.join(missing)}"
        return None

    async def _customer(
        self, parsed: NotificationRequest, create: bool = True
    ) -> Tuple[Optional[str], Optional[Address]]:
        """The conversation the request names (None when unknown) and its phone address."""
        customer = parsed.customer
        try:
            if customer.phone is not None:
                address = phone_address(customer.phone, self.settings.default_phone_region)
                found = await self.identity.lookup(address)
                if found is None and parsed.consent is not None and create:
                    # The business's consent record covers a number that never wrote to us.
                    found = await self.identity.resolve_conversation(address)
                return found, address
            if customer.user_id is not None:
                return await self.identity.lookup(user_address(customer.user_id)), None
        except InvalidAddress:
            raise BadRequest("customer: not a valid phone number or user id") from None
        cid = str(customer.conversation_id)
        profile = await self.identity.profile(cid)
        known = profile.channels or profile.phone or profile.user_id
        return (cid if known else None), None

    async def _submit(
        self, queue: OutboundQueue, parsed: NotificationRequest, item_id: str
    ) -> Tuple[int, Dict[str, Any]]:
        cid, address = await self._customer(parsed)
        if cid is None:
            await queue.refuse_unknown(NOTIFICATION_KIND, UNKNOWN_CUSTOMER)
            return 200, answer(item_id, "refused", None, NOT_REACHABLE, None)
        if parsed.consent is not None:
            phone = address or await self._phone_of(cid)
            if phone is not None:
                await ConsentStore(self.identity.given).record(
                    phone, GRANTED, parsed.consent.source, reference=parsed.consent.reference
                )
        item = OutboundItem(
            item_id,
            NOTIFICATION_KIND,
            cid,
            due=parsed.send_at.timestamp() if parsed.send_at else None,
            source="api",
            consent_record=parsed.consent is not None,
            payload={"response": parsed.response, "slots": dict(parsed.slots)},
        )
        return self._answer(await queue.submit(item))

    async def _recorded(
        self, queue: OutboundQueue, parsed: NotificationRequest, item_id: str
    ) -> Optional[Tuple[int, Dict[str, Any]]]:
        """The answer for a notification already recorded under ``item_id``, if it is."""
        cid, _ = await self._customer(parsed, create=False)
        item = await queue.store.get(cid, item_id) if cid else None
        if item is None:
            return None
        return self._answer(item)

    @staticmethod
    def _answer(item: OutboundItem) -> Tuple[int, Dict[str, Any]]:
        reason = NOT_REACHABLE if item.reason in _HIDDEN_REASONS else item.reason
        code = 200 if item.status in FINAL else 202
        return code, answer(item.item_id, item.status, item.channel, reason, item.due)

    async def _phone_of(self, cid: str) -> Optional[Address]:
        profile = await self.identity.profile(cid)
        return Address("tel", profile.phone) if profile.phone else None
