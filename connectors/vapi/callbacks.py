"""Callbacks by phone, the VAPI half: dialling each callback once when it is due, and following
its call (VAPI's status updates and end-of-call report) to the callback's outcome.

Dialling is durable work shared by the fleet. Every replica's dialer looks for due callbacks
(:meth:`CallbackDialer.sweep_once`, about once a second); the first to record the callback's
work item (an :class:`~omnichannel.leases.InFlightWork` of kind ``callback_call`` named by the
callback's id and version) and move its record from ``scheduled`` to ``dialing`` dials it, under
a lease it keeps renewing. A replica that dies while dialling stops renewing; the takeover
sweeper of another replica resumes the item, and because ``POST /call`` has no idempotency key,
it first asks VAPI for a call carrying the item's ``dial_id`` in its metadata (created after the
record noted the dial's start) and adopts that call instead of dialling again. A restart finds
the item done and the record ``placed``: nothing is dialled twice.

The call goes to the conversation's own number (the contact profile's: the number the customer
called or texted from, or the verified number their site login carries), never to a number a
customer typed. Its first words are the callback's ``opening`` (written from domain.yml when it
was requested: "You asked us to call about order 40213…"), and its metadata names the
conversation and the callback, so the call's turns continue that conversation
(:meth:`CallbackCalls.conversation_of`, which believes the metadata only for the call id the
callback's record holds).

How it ended comes in server messages: ``status-update`` ``in-progress`` (answered) and
``ended`` or the ``end-of-call-report`` with its ``endedReason``. A call nobody answered
(``customer-did-not-answer``, ``customer-busy``, ``voicemail``) or that failed is told to the
customer on the messaging channel they last wrote on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional

from rasa.shared.core.events import SlotSet
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.vapi.greeting import response_text
from connectors.vapi.outbound import OutboundCall, PlacedCall, VapiApi, VapiApiError
from connectors.vapi.wire import Call
from omnichannel import metrics
from omnichannel.callbacks.store import (
    ANSWERED,
    COMPLETED,
    DIALING,
    FAILED,
    NOT_ANSWERED,
    PLACED,
    REFUSED,
    SCHEDULED,
    Callback,
    CallbackStore,
)
from omnichannel.channels import TWILIO_SMS
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.leases import InFlightWork, Lease, takeover
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice
from omnichannel.settings import Settings
from omnichannel.sms_sender import SmsRefused, SmsSender, SmsSendFailed
from omnichannel.tasks import BackgroundTasks, cancellable

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

WORK_KIND = "callback_call"
#: Dialling renews its lease every third of this; a dead dialer's callback waits this long.
LEASE_SECONDS = 6.0
#: How often each replica looks for due callbacks.
SWEEP_SECONDS = 1.0
#: Attempts at ``POST /call`` before a callback fails (VAPI down, over its concurrency limit).
MAX_ATTEMPTS = 5
#: Wait before the next attempt: this times the attempt number.
RETRY_SECONDS = 60.0
#: A reconcile looks for calls created since the dial started, less this (clocks differ).
CLOCK_SKEW_SECONDS = 60.0

#: End reasons of a call nobody took (VAPI's Call.endedReason; 600+ exist, others count as
#: failures when the call never went in progress).
NOT_ANSWERED_REASONS = frozenset({"customer-did-not-answer", "customer-busy", "voicemail"})

#: Metrics outcomes.
OUTCOME_PLACED = "placed"
OUTCOME_RETRIED = "retried"
OUTCOME_RECONCILED = "reconciled"
OUTCOME_REPORTED = "reported"
OUTCOME_UNREPORTED = "unreported"

Clock = Callable[[], float]
#: Tells a customer that their callback did not reach them: (callback, outcome) -> None.
Report = Callable[[Callback, str], Awaitable[None]]

#: The metadata keys of a callback's call.
CONVERSATION_KEY = "conversation_id"
CALLBACK_KEY = "callback_id"
DIAL_KEY = "dial_id"


@dataclass(frozen=True)
class Decision:
    """Whether a callback may be dialled now: ``refusal`` None = yes."""

    refusal: Optional[str] = None
    #: A refusal that passes (quiet hours): try again at this moment.
    retry_at: Optional[float] = None


class CallbackDialer:
    """Places due callbacks through VAPI's API, once across the fleet (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Optional[CallbackStore] = None,
        identity: Optional[IdentityStore] = None,
        api: Optional[VapiApi] = None,
        report: Optional[Report] = None,
        clock: Clock = time.time,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        if not settings.places_calls:
            raise ValueError("VAPI_API_KEY and VAPI_PHONE_NUMBER_ID are needed to place calls")
        self.settings = settings
        self.store = store or CallbackStore()
        self.identity = identity or IdentityStore(self.store.given)
        self.api = api or VapiApi(str(settings.vapi_api_key), settings.vapi_api_base_url)
        self.work = InFlightWork(settings.redis_url, WORK_KIND, lease_seconds=lease_seconds)
        self.report = report
        self.clock = clock
        #: The transient assistant's name (domain.yml's), when no saved assistant is set.
        self.name_of: Optional[Callable[[], Awaitable[str]]] = None
        self._loop_tasks = BackgroundTasks("callback dialer", in_flight=False)
        self._dials = BackgroundTasks("callback dials")

    def start(self) -> None:
        """Sweeps for due callbacks in the background, and resumes dials of dead replicas."""
        takeover().register(self.work, self.resume)
        if not len(self._loop_tasks):
            self._loop_tasks.start(self._sweep_forever(), "sweep due callbacks")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            if takeover().paused:
                continue  # a draining replica starts no new work
            try:
                await cancellable(self.sweep_once())
            except REDIS_FAILURES as error:
                logger.warning("callback sweep failed: %s", type(error).__name__)

    async def sweep_once(self, wait: bool = False) -> int:
        """Claims every callback due now and dials it (in the background; ``wait``: here).
        Returns how many were claimed."""
        now = self.clock()
        claimed = 0
        for conversation_id, callback_id in await self.store.due(now):
            callback = await self.store.get(conversation_id, callback_id)
            if callback is None or callback.state != SCHEDULED:
                await self.store.unindex(conversation_id, callback_id)
                continue
            if callback.due_at > now:
                continue  # moved later; its index entry was re-scored
            lease = await self.work.record(
                conversation_id, callback.work_id, {"callback_id": callback_id}
            )
            if not isinstance(lease, Lease):
                continue  # another replica has it
            claimed += 1
            if wait:
                await self._held_dial(lease)
            else:
                self._dials.start(self._held_dial(lease), "dial a callback")
        return claimed

    async def _held_dial(self, lease: Lease) -> None:
        async with self.work.held(lease):
            await self.resume(lease)

    async def resume(self, lease: Lease) -> None:
        """Dials the callback of ``lease`` (first run or a takeover), then completes the work."""
        outcome: Dict[str, Any] = {}
        try:
            outcome = await self._dial(lease)
        finally:
            try:
                await self.work.complete(lease, outcome)
            except REDIS_FAILURES as error:
                logger.error("callback %s: not completed: %s", lease.item_id, type(error).__name__)

    async def _dial(self, lease: Lease) -> Dict[str, Any]:
        conversation_id = lease.conversation_id
        callback = await self.store.get(conversation_id, str(lease.payload["callback_id"]))
        if callback is None or callback.work_id != lease.item_id:
            return {"skipped": "gone or moved"}
        if callback.state == SCHEDULED:
            claimed = await self.store.transition(
                callback, DIALING, expected=[SCHEDULED], same_version=True
            )
            if not claimed.done:
                return {"skipped": claimed.state}
            callback = await self.store.get(conversation_id, callback.callback_id) or callback
        elif callback.state != DIALING:
            return {"skipped": callback.state}
        await self.store.unindex(conversation_id, callback.callback_id)

        profile = await self.identity.profile(conversation_id)
        if not profile.phone:
            await self._finish(callback, REFUSED, reason="no_phone")
            return {"refused": "no_phone"}
        decision = await self.may_call(callback, profile.phone)
        if decision.refusal is not None:
            if decision.retry_at is not None:
                await self._reschedule(callback, decision.retry_at, decision.refusal)
                return {"held": decision.refusal}
            await self._finish(callback, REFUSED, reason=decision.refusal)
            return {"refused": decision.refusal}

        placed: Optional[PlacedCall] = None
        if callback.dial_started_at:
            placed = await self._reconcile(callback)
            if placed is not None:
                metrics.CALLBACKS.labels(outcome=OUTCOME_RECONCILED).inc()
        if placed is None:
            started = self.clock()
            noted = await self.store.transition(
                callback,
                DIALING,
                expected=[DIALING],
                same_version=True,
                fields={"dial_started_at": repr(started), "attempts": callback.attempts + 1},
            )
            if not noted.done:
                return {"skipped": noted.state}
            transient = self.name_of is not None and not self.settings.vapi_assistant_id
            name = await self.name_of() if self.name_of is not None and transient else ""
            try:
                placed = await self.api.create_call(self._call(callback, profile.phone, name))
            except VapiApiError as error:
                return await self._failed_attempt(callback, error)
        await self.store.transition(
            callback, PLACED, expected=[DIALING], fields={"call_id": placed.call_id}
        )
        metrics.CALLBACKS.labels(outcome=OUTCOME_PLACED).inc()
        logger.info("callback %s: call %s placed", callback.callback_id, placed.call_id)
        return {"call_id": placed.call_id}

    async def may_call(self, callback: Callback, number: str) -> Decision:
        """The outbound policy's word on calling now (consent, quiet hours, rate limits)."""
        return Decision()

    def _call(self, callback: Callback, number: str, assistant_name: str) -> OutboundCall:
        opening = render_voice([BotMessage(text=callback.opening)]) if callback.opening else ""
        return OutboundCall(
            phone_number_id=str(self.settings.vapi_phone_number_id),
            customer_number=number,
            first_message=opening,
            metadata={
                CONVERSATION_KEY: callback.conversation_id,
                CALLBACK_KEY: callback.callback_id,
                DIAL_KEY: callback.work_id,
            },
            assistant_id=self.settings.vapi_assistant_id,
            public_base_url=self.settings.public_base_url,
            assistant_name=assistant_name,
            name=f"callback {callback.callback_id}",
        )

    async def _reconcile(self, callback: Callback) -> Optional[PlacedCall]:
        """The call an earlier attempt of this dial made, if VAPI has one."""
        since = float(callback.dial_started_at) - CLOCK_SKEW_SECONDS
        try:
            return await self.api.find_call(DIAL_KEY, callback.work_id, since)
        except VapiApiError as error:
            # Unknown: dialling now could call twice. Try again at the next attempt.
            logger.warning("callback %s: reconcile failed: %s", callback.callback_id, error.reason)
            raise

    async def _failed_attempt(self, callback: Callback, error: VapiApiError) -> Dict[str, Any]:
        logger.warning("callback %s: POST /call failed: %s", callback.callback_id, error.reason)
        if error.outcome_unknown:
            try:
                placed = await self._reconcile(callback)
            except VapiApiError:
                placed = None
            if placed is not None:
                await self.store.transition(
                    callback, PLACED, expected=[DIALING], fields={"call_id": placed.call_id}
                )
                metrics.CALLBACKS.labels(outcome=OUTCOME_RECONCILED).inc()
                return {"call_id": placed.call_id}
        if error.retryable and callback.attempts + 1 < MAX_ATTEMPTS:
            retry_at = self.clock() + RETRY_SECONDS * (callback.attempts + 1)
            await self._reschedule(callback, retry_at, "vapi_unavailable")
            metrics.CALLBACKS.labels(outcome=OUTCOME_RETRIED).inc()
            return {"retry_at": retry_at}
        await self._finish(callback, FAILED, reason=f"vapi_{error.status or 'unreachable'}")
        return {"failed": error.status}

    async def _reschedule(self, callback: Callback, due_at: float, reason: str) -> None:
        moved = await self.store.transition(
            callback,
            SCHEDULED,
            expected=[DIALING],
            new_version=True,
            fields={"due_at": due_at, "reason": reason, "dial_started_at": None},
        )
        if moved.done:
            await self.store.reindex(
                Callback(**{**callback.__dict__, "due_at": due_at, "version": moved.version})
            )

    async def _finish(self, callback: Callback, state: str, *, reason: str) -> None:
        finished = await self.store.transition(
            callback, state, expected=[DIALING], fields={"reason": reason}
        )
        if finished.done:
            metrics.CALLBACKS.labels(outcome=state).inc()
            if self.report is not None:
                await self.report(callback, state)


class CallbackCalls:
    """The calls of callbacks, as VAPI tells of them (custom-LLM turns, server messages)."""

    def __init__(self, store: Optional[CallbackStore] = None, report: Optional[Report] = None):
        self.store = store or CallbackStore()
        self.report = report

    async def callback_of(self, call: Call) -> Optional[Callback]:
        """The callback this outbound call was placed for: its metadata names one whose record
        holds this call id (metadata alone proves nothing: a web call's browser sets it)."""
        if not call.outbound or not call.call_id:
            return None
        metadata = call.metadata
        conversation_id = metadata.get(CONVERSATION_KEY)
        callback_id = metadata.get(CALLBACK_KEY)
        if not isinstance(conversation_id, str) or not isinstance(callback_id, str):
            return None
        if len(conversation_id) > 100 or len(callback_id) > 100:
            return None
        callback = await self.store.get(conversation_id, callback_id)
        if callback is None or callback.call_id != call.call_id:
            return None
        return callback

    async def conversation_of(self, call: Call) -> Optional[str]:
        """The conversation a callback's call continues (None: not a callback's call). Its
        first turn also marks the callback answered."""
        callback = await self.callback_of(call)
        if callback is None:
            return None
        if callback.state == PLACED:
            await self._answered(callback)
        return callback.conversation_id

    async def _answered(self, callback: Callback) -> None:
        moved = await self.store.transition(callback, ANSWERED, expected=[PLACED])
        if moved.done:
            metrics.CALLBACKS.labels(outcome=ANSWERED).inc()

    async def status(self, call: Call, status: Optional[str], ended_reason: Optional[str]) -> None:
        """A ``status-update`` or ``end-of-call-report`` (status ``ended``) of a call."""
        callback = await self.callback_of(call)
        if callback is None:
            return
        if status == "in-progress" and callback.state == PLACED:
            await self._answered(callback)
            return
        if status != "ended":
            return
        reason = ended_reason or ""
        if reason in NOT_ANSWERED_REASONS:
            outcome = NOT_ANSWERED
        elif callback.state == ANSWERED:
            outcome = COMPLETED
        else:
            outcome = FAILED
        finished = await self.store.transition(
            callback, outcome, expected=[PLACED, ANSWERED], fields={"ended_reason": reason[:100]}
        )
        if not finished.done:
            return  # the other message of the pair got here first
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        logger.info("callback %s: call ended (%s): %s", callback.callback_id, reason, outcome)
        if outcome != COMPLETED and self.report is not None:
            await self.report(callback, outcome)


#: The response that tells a customer how their callback went, by outcome (``_order`` forms
#: when it was about an order: ``{order_number}``).
REPORTS = {NOT_ANSWERED: "utter_callback_missed", FAILED: "utter_callback_failed"}


class CallbackReporter:
    """Tells the customer, on the messaging channel they last wrote on, that their callback
    did not reach them, in domain.yml's words (``REPORTS``). A refused callback is not
    reported: the refusal is the customer's STOP, or there is no number to text."""

    def __init__(self, agent_of: Callable[[], Agent], sender: Optional[SmsSender] = None):
        self.agent_of = agent_of
        self._sender = sender

    @property
    def sender(self) -> SmsSender:
        if self._sender is None:
            self._sender = SmsSender.from_settings()
        return self._sender

    async def __call__(self, callback: Callback, outcome: str) -> None:
        name = REPORTS.get(outcome)
        if name is None:
            return
        agent = self.agent_of()
        tracker = DialogueStateTracker(callback.conversation_id, agent.domain.slots)
        if callback.topic:
            name += "_order"
            tracker.update(SlotSet("order_number", callback.topic))
        text = await response_text(agent, name, tracker, TWILIO_SMS)
        if not text:
            return
        try:
            delivery = await self.sender.send_to_customer(
                callback.conversation_id, [BotMessage(text=text)], channel=None
            )
        except (SmsRefused, SmsSendFailed, ConfigError, *REDIS_FAILURES) as error:
            logger.error(
                "callback %s: %s not reported: %s",
                callback.callback_id,
                outcome,
                type(error).__name__,
            )
            metrics.CALLBACKS.labels(outcome=OUTCOME_UNREPORTED).inc()
            return
        metrics.CALLBACKS.labels(outcome=OUTCOME_REPORTED).inc()
        logger.info(
            "callback %s: %s reported by %s (%s)",
            callback.callback_id,
            outcome,
            delivery.channel,
            delivery.route,
        )
