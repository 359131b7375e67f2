"""Callbacks by phone, the VAPI half: the courier that places a due callback's call through
VAPI's API, and following that call (its turns, status updates and end-of-call report) to the
callback's outcome.

A callback is an outbound item of kind ``callback`` (omnichannel/callbacks/items.py), so the
outbound queue (omnichannel/outbound/items.py) decides when it may go (consent, quiet hours,
rate limits), claims it once across the fleet at its due time and hands it to
:class:`CallbackCourier` under a lease. ``POST /call`` takes no idempotency key, so when a
replica died at that moment (the queue's sweeper resumes the send with ``lease.taken_over``) the
courier first asks VAPI for a call carrying the item's id in its metadata and adopts it instead
of dialling again; a failure whose outcome is unknown (a timeout, a 5xx) is reconciled the same
way before it is retried. A restart finds the item ``sent``: nothing is dialled twice.

The call goes to the conversation's own number (the contact profile's: the number the customer
called or texted from, or the verified number their site login carries), never to a number a
customer typed. Its first words are the callback's ``opening`` ("You asked us to call about
order 40213…"), and its metadata names the conversation and the item, so the call's turns
continue that conversation (:meth:`CallbackCalls.conversation_of`, which believes the metadata
only for an outbound call to that conversation's number whose item is being sent or holds this
call's id).

How it ended comes in server messages: ``status-update`` ``in-progress`` (answered) and
``ended``, or the ``end-of-call-report``, with its ``endedReason``. A call nobody answered
(``customer-did-not-answer``, ``customer-busy``, ``voicemail``) or that failed before anyone
answered moves the item to ``failed`` and is told to the customer on the messaging channel they
last wrote on.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from rasa.shared.core.events import SlotSet
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.vapi.greeting import response_text
from connectors.vapi.outbound import OutboundCall, PlacedCall, VapiApi, VapiApiError
from connectors.vapi.wire import Call
from omnichannel import metrics
from omnichannel.addresses import InvalidAddress, phone_address
from omnichannel.callbacks.items import ANSWERED_FIELD, ENDED_REASON_FIELD
from omnichannel.channels import TWILIO_SMS, VOICE
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.leases import Lease
from omnichannel.outbound.items import (
    FAILED,
    REFUSED,
    SCHEDULED,
    SENDING,
    SENT,
    Delivered,
    OutboundItem,
    OutboundStore,
    outbound_queue,
)
from omnichannel.outbound.policy import CALLBACK, NOTIFICATION
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice
from omnichannel.settings import Settings
from omnichannel.sms_sender import SmsRefused, SmsSender, SmsSendFailed

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

#: Attempts at ``POST /call`` before a callback fails (VAPI down, over its concurrency limit).
MAX_ATTEMPTS = 5
#: Wait before the next attempt: this times the attempt number.
RETRY_SECONDS = 60.0
#: A reconcile looks for calls created since the callback was due, less this (clocks differ).
CLOCK_SKEW_SECONDS = 120.0

#: End reasons of a call nobody took (VAPI's Call.endedReason; 600+ exist: any other ends a
#: call that never went in progress as a failure).
NOT_ANSWERED_REASONS = frozenset({"customer-did-not-answer", "customer-busy", "voicemail"})

#: An earlier attempt's call may exist (its answer was lost and VAPI could not be asked).
UNSURE = "unsure"

#: The metadata keys of a callback's call.
CONVERSATION_KEY = "conversation_id"
CALLBACK_KEY = "callback_id"

#: Outcomes of :data:`omnichannel.metrics.CALLBACKS` (the queue counts scheduled, sent,
#: refused, failed and cancelled items itself).
OUTCOME_PLACED = "placed"
OUTCOME_RETRIED = "retried"
OUTCOME_RECONCILED = "reconciled"
OUTCOME_ANSWERED = "answered"
OUTCOME_COMPLETED = "completed"
OUTCOME_NOT_ANSWERED = "not_answered"
OUTCOME_FAILED = "failed"
OUTCOME_REPORTED = "reported"
OUTCOME_UNREPORTED = "unreported"

Clock = Callable[[], float]


class CallbackCourier:
    """Places a callback's call (the outbound queue's courier for kind ``callback``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        identity: Optional[IdentityStore] = None,
        api: Optional[VapiApi] = None,
        report: Optional[Callable[[OutboundItem, str], Any]] = None,
        clock: Clock = time.time,
    ) -> None:
        if not settings.places_calls:
            raise ConfigError("VAPI_API_KEY and VAPI_PHONE_NUMBER_ID are needed to place calls")
        self.settings = settings
        self.identity = identity or IdentityStore()
        self.api = api or VapiApi(str(settings.vapi_api_key), settings.vapi_api_base_url)
        self.report = report
        self.clock = clock
        #: The transient assistant's name (domain.yml's), when no saved assistant is set.
        self.name_of: Optional[Callable[[], Any]] = None

    async def route(self, item: OutboundItem) -> str:
        return VOICE

    async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
        profile = await self.identity.profile(item.conversation_id)
        if not profile.phone:
            return Delivered(REFUSED, VOICE, reason="no_address")
        # A replica died at this moment, or an earlier attempt's outcome stayed unknown: the
        # call may exist. Dial only once VAPI says it does not.
        if lease.taken_over or item.outcome.get(UNSURE):
            try:
                placed = await self._reconcile(item)
            except VapiApiError as error:
                logger.warning("callback %s: reconcile failed: %s", item.item_id, error.reason)
                return await self._retry(item, unsure=True)
            if placed is not None:
                return self._placed(item, placed, reconciled=True)
        name = ""
        if self.name_of is not None and not self.settings.vapi_assistant_id:
            name = str(await self.name_of())
        try:
            placed = await self.api.create_call(self._call(item, profile.phone, name))
        except VapiApiError as error:
            return await self._failed_attempt(item, error)
        return self._placed(item, placed)

    def _placed(
        self, item: OutboundItem, placed: PlacedCall, reconciled: bool = False
    ) -> Delivered:
        outcome = OUTCOME_RECONCILED if reconciled else OUTCOME_PLACED
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        logger.info("callback %s: call %s placed", item.item_id, placed.call_id)
        return Delivered(SENT, VOICE, detail={"call_id": placed.call_id})

    def _call(self, item: OutboundItem, number: str, assistant_name: str) -> OutboundCall:
        opening = str(item.payload.get("opening") or "")
        return OutboundCall(
            phone_number_id=str(self.settings.vapi_phone_number_id),
            customer_number=number,
            first_message=render_voice([BotMessage(text=opening)]) if opening else "",
            metadata={CONVERSATION_KEY: item.conversation_id, CALLBACK_KEY: item.item_id},
            assistant_id=self.settings.vapi_assistant_id,
            public_base_url=self.settings.public_base_url,
            assistant_name=assistant_name,
            name=f"callback {item.item_id}",
        )

    async def _reconcile(self, item: OutboundItem) -> Optional[PlacedCall]:
        """The call an earlier attempt at this item made, if VAPI has one. Raises VapiApiError
        when VAPI cannot say (dialling then could call twice)."""
        since = (item.due or item.created) - CLOCK_SKEW_SECONDS
        return await self.api.find_call(CALLBACK_KEY, item.item_id, since)

    async def _failed_attempt(self, item: OutboundItem, error: VapiApiError) -> Delivered:
        logger.warning("callback %s: POST /call failed: %s", item.item_id, error.reason)
        unsure = error.outcome_unknown
        if unsure:
            try:
                placed = await self._reconcile(item)
            except VapiApiError as unknown:
                logger.warning("callback %s: reconcile failed: %s", item.item_id, unknown.reason)
                placed = None
            if placed is not None:
                return self._placed(item, placed, reconciled=True)
        if error.retryable:
            return await self._retry(item, unsure=unsure)
        return await self._give_up(item, "vapi_refused")

    async def _give_up(self, item: OutboundItem, reason: str) -> Delivered:
        """Failed: counted, and told to the customer."""
        metrics.CALLBACKS.labels(outcome=OUTCOME_FAILED).inc()
        if self.report is not None:
            await self.report(item, OUTCOME_FAILED)
        attempts = int(item.outcome.get("attempts") or 0) + 1
        return Delivered(FAILED, VOICE, detail={"attempts": attempts}, reason=reason)

    async def _retry(self, item: OutboundItem, *, unsure: bool) -> Delivered:
        """Back to scheduled, a minute more each attempt (``unsure``: the next attempt
        reconciles first); failed after MAX_ATTEMPTS."""
        attempts = int(item.outcome.get("attempts") or 0) + 1
        if attempts >= MAX_ATTEMPTS:
            return await self._give_up(item, "vapi_down")
        metrics.CALLBACKS.labels(outcome=OUTCOME_RETRIED).inc()
        detail: Dict[str, Any] = {"attempts": attempts}
        if unsure:
            detail[UNSURE] = True
        return Delivered(
            SCHEDULED,
            VOICE,
            detail=detail,
            reason="vapi_unavailable",
            retry_at=self.clock() + RETRY_SECONDS * attempts,
        )


class CallbackCalls:
    """The calls of callbacks, as VAPI tells of them (custom-LLM turns, server messages)."""

    def __init__(
        self,
        store: Optional[OutboundStore] = None,
        identity: Optional[IdentityStore] = None,
        report: Optional[Callable[[OutboundItem, str], Any]] = None,
        default_region: str = "US",
    ) -> None:
        self.store = store or OutboundStore()
        self.identity = identity or IdentityStore()
        self.report = report
        self.default_region = default_region

    async def callback_of(self, call: Call) -> Optional[OutboundItem]:
        """The callback item this outbound call was placed for. Metadata alone proves nothing
        (a browser starting a web call sets its own), so the item must be a callback being
        sent or sent with this call's id, and the call must go to its conversation's number."""
        if not call.outbound or not call.call_id:
            return None
        metadata = call.metadata
        conversation_id = metadata.get(CONVERSATION_KEY)
        item_id = metadata.get(CALLBACK_KEY)
        if not isinstance(conversation_id, str) or not isinstance(item_id, str):
            return None
        if not 0 < len(conversation_id) <= 100 or not 0 < len(item_id) <= 100:
            return None
        item = await self.store.get(conversation_id, item_id)
        if item is None or item.kind != CALLBACK or item.status not in (SENDING, SENT, FAILED):
            return None
        placed_call = item.outcome.get("call_id")
        if placed_call and placed_call != call.call_id:
            return None
        if not placed_call:
            number = call.customer.number if call.customer else None
            profile = await self.identity.profile(conversation_id)
            try:
                callee = phone_address(number or "", self.default_region).value
            except InvalidAddress:
                return None
            if not profile.phone or profile.phone != callee:
                return None
        return item

    async def conversation_of(self, call: Call) -> Optional[str]:
        """The conversation a callback's call continues (None: not a callback's call). A turn
        also shows the call was answered."""
        item = await self.callback_of(call)
        if item is None:
            return None
        await self._answered(item)
        return item.conversation_id

    async def _answered(self, item: OutboundItem) -> None:
        key = self.store.item_key(item.conversation_id, item.item_id)
        if await self.store.redis.hsetnx(key, ANSWERED_FIELD, "1"):
            metrics.CALLBACKS.labels(outcome=OUTCOME_ANSWERED).inc()
            # The customer talked to us on the phone (the contact profile's channels seen).
            await self.identity.record_channel(item.conversation_id, VOICE)

    async def status(self, call: Call, status: Optional[str], ended_reason: Optional[str]) -> None:
        """A ``status-update`` or ``end-of-call-report`` (status ``ended``) of a call."""
        if status not in ("in-progress", "ended"):
            return
        item = await self.callback_of(call)
        if item is None:
            return
        if status == "in-progress":
            await self._answered(item)
            return
        key = self.store.item_key(item.conversation_id, item.item_id)
        reason = (ended_reason or "ended")[:100]
        # Both messages of a call's end arrive (status ``ended``, then the report): the first
        # one decides.
        if not await self.store.redis.hsetnx(key, ENDED_REASON_FIELD, reason):
            return
        answered = bool(await self.store.redis.hget(key, ANSWERED_FIELD))
        if answered and reason not in NOT_ANSWERED_REASONS:
            metrics.CALLBACKS.labels(outcome=OUTCOME_COMPLETED).inc()
            logger.info("callback %s: call ended (%s)", item.item_id, reason)
            return
        outcome = OUTCOME_NOT_ANSWERED if reason in NOT_ANSWERED_REASONS else OUTCOME_FAILED
        moved = await self.store.transition(
            item.conversation_id,
            item.item_id,
            (SENDING, SENT),
            now=time.time(),
            status=FAILED,
            reason=reason,
        )
        if not moved:
            return
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        metrics.OUTBOUND_ITEMS.labels(
            kind=CALLBACK, channel=VOICE, outcome=metrics.OUTBOUND_FAILED
        ).inc()
        logger.info("callback %s: call ended (%s): %s", item.item_id, reason, outcome)
        if self.report is not None:
            await self.report(item, outcome)


#: The response that tells a customer how their callback went, by outcome (``_order`` forms
#: when it was about an order: ``{order_number}``).
REPORTS = {
    (OUTCOME_NOT_ANSWERED, False): "utter_callback_missed",
    (OUTCOME_NOT_ANSWERED, True): "utter_callback_missed_order",
    (OUTCOME_FAILED, False): "utter_callback_failed",
    (OUTCOME_FAILED, True): "utter_callback_failed_order",
}


class CallbackReporter:
    """Tells the customer that their callback did not reach them, in domain.yml's words
    (``REPORTS``; the ``_order`` form with ``{order_number}`` when it was about an order).

    The report is a notification on the outbound queue (item ``<callback id>.<outcome>``), so
    it goes once however often VAPI's messages or a takeover bring it here, on the channel the
    notifications take (an open chat tab, else the messaging channel the customer last wrote
    on), is recorded in the conversation, and waits out what the gate says. A server without the
    notifications channel (no courier for them) texts it directly instead, on the channel the
    customer last wrote on. A refused callback is not reported: the refusal is the customer's
    STOP, or there is no number to text."""

    def __init__(
        self,
        agent_of: Callable[[], Agent],
        redis_url: Optional[str] = None,
        sender: Optional[SmsSender] = None,
    ):
        self.agent_of = agent_of
        self.redis_url = redis_url
        self._sender = sender

    @property
    def sender(self) -> SmsSender:
        if self._sender is None:
            self._sender = SmsSender.from_settings()
        return self._sender

    async def __call__(self, callback: OutboundItem, outcome: str) -> None:
        topic = str(callback.payload.get("topic") or "")
        name = REPORTS.get((outcome, bool(topic)))
        if name is None:
            return
        slots = {"order_number": topic} if topic else {}
        queue = outbound_queue(self.redis_url)
        if NOTIFICATION in queue.couriers:
            report = OutboundItem(
                item_id=f"{callback.item_id}.{outcome}",
                kind=NOTIFICATION,
                conversation_id=callback.conversation_id,
                source=callback.source,
                customer_requested=callback.customer_requested,
                payload={"response": name, "slots": slots},
            )
            await queue.submit(report, send_now=False)
            metrics.CALLBACKS.labels(outcome=OUTCOME_REPORTED).inc()
            return
        await self._text(callback, outcome, name, slots)

    async def _text(
        self, callback: OutboundItem, outcome: str, name: str, slots: Dict[str, str]
    ) -> None:
        agent = self.agent_of()
        tracker = DialogueStateTracker(
            callback.conversation_id, agent.domain.slots if agent.domain is not None else []
        )
        for slot, value in slots.items():
            tracker.update(SlotSet(slot, value))
        text = await response_text(agent, name, tracker, TWILIO_SMS)
        if not text:
            return
        try:
            delivery = await self.sender.send_to_customer(
                callback.conversation_id, [BotMessage(text=text)], channel=None
            )
        except (SmsRefused, SmsSendFailed, ConfigError, *REDIS_FAILURES) as error:
            logger.error(
                "callback %s: %s not reported: %s", callback.item_id, outcome, type(error).__name__
            )
            metrics.CALLBACKS.labels(outcome=OUTCOME_UNREPORTED).inc()
            return
        metrics.CALLBACKS.labels(outcome=OUTCOME_REPORTED).inc()
        logger.info(
            "callback %s: %s reported by %s (%s)",
            callback.item_id,
            outcome,
            delivery.channel,
            delivery.route,
        )
