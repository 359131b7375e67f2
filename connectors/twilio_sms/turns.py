"""An incoming SMS as durable in-flight work: recorded before Twilio gets an answer, finished by
whichever replica is alive.

Each accepted delivery is an ``sms_turn`` item (:mod:`omnichannel.leases`, item id = MessageSid)
whose payload is all it takes to run the turn again (conversation, text or intent, whether it
is a trusted payload, metadata, where replies go and from which of our numbers). The item is
also the delivery's dedupe record, the one place that decides: a duplicate finds it running (an
empty TwiML: the running turn answers) or done with the TwiML the first delivery got.

This is the durable turn of :mod:`connectors.turns.durable` with SMS's wire and delivery. The
replica that recorded the item runs the turn under the item's lease, through
:func:`connectors.turns.once.run_once`, and answers inline when the turn ends within the inline
budget (the TwiML is stored as the item's outcome before the webhook returns it). Otherwise the
webhook acknowledges with an empty TwiML and the replies go to the SMS outbox
(:mod:`.outbox`): recorded first, then the turn item is completed, then they are sent.

A WhatsApp turn is answered by :class:`WhatsAppOutput` (so ``channel: whatsapp`` variations
apply) and rendered for WhatsApp; messages held while WhatsApp's window was shut
(omnichannel/whatsapp_window.py) go out first, by REST, now that the customer's message has
opened it.

A replica that dies leaves its items to the others' sweepers: a turn it had not processed is run
(``run_once`` finds no event with its MessageSid); a turn it had processed but not answered is
answered from the event log (:func:`connectors.turns.once.replay`); either way the replies go
through the outbox by REST. A draining replica hands off (``release``) what it could not finish
by the drain's bound, so another replica takes it over at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from rasa.core.channels.channel import OutputChannel

from connectors.turns.durable import DurableTurns, leased_message
from connectors.turns.once import replay, run_once
from connectors.turns.run import TurnFailed
from connectors.twilio_sms.outbox import SmsOutbox
from connectors.twilio_sms.state import OfferedButtons
from connectors.twilio_sms.wire import EMPTY_TWIML, twiml
from omnichannel.channels import SMS, TWILIO_SMS, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.outbound.consent import OPT_IN, OPT_OUT, record_phone_consent
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.rendering.messages import BotMessage, TurnOutput
from omnichannel.rendering.sms import SmsMessage, SmsRendering, render_sms
from omnichannel.rendering.whatsapp import render_whatsapp
from omnichannel.tasks import BackgroundTasks
from omnichannel.whatsapp_window import WhatsAppState

logger = logging.getLogger(__name__)

SMS_TURN = "sms_turn"

APOLOGY = (
    "Sorry, something went wrong on our side and your message could not be handled. "
    "Please try again in a few minutes."
)
APOLOGY_RENDERING = SmsRendering(messages=(SmsMessage(body=APOLOGY),))
APOLOGY_TWIML = twiml(APOLOGY_RENDERING.messages)


class TwilioSmsOutput(OutputChannel):
    """Collects one turn's bot messages; the connector renders them as TwiML or REST SMS.

    ``name()`` is the input channel's, so designers' ``channel: twilio_sms`` variations apply.
    """

    @classmethod
    def name(cls) -> str:
        return TWILIO_SMS

    def __init__(self) -> None:
        self.turn = TurnOutput()

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        self.turn.add(message)


class WhatsAppOutput(TwilioSmsOutput):
    """A WhatsApp turn's output: named ``whatsapp``, so designers' ``channel: whatsapp``
    variations apply (and not the ``twilio_sms`` ones, written for SMS's plain text)."""

    @classmethod
    def name(cls) -> str:
        return WHATSAPP


class InlineAnswer:
    """The webhook waiting for a turn's TwiML. Exactly one side decides how the turn is
    answered: the turn takes the inline answer (:meth:`take`), or the webhook gives up at its
    budget (:meth:`close`) and the turn replies by REST; never both, never neither."""

    def __init__(self) -> None:
        self.future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._taken = False
        self._closed = False

    def take(self) -> bool:
        if self._closed:
            return False
        self._taken = True
        return True

    def close(self) -> bool:
        """True when the turn will reply by REST; False when it already took the answer."""
        if self._taken:
            return False
        self._closed = True
        return True

    def give(self, answer: str) -> None:
        if not self.future.done():
            self.future.set_result(answer)


class SmsTurns:
    """The ``sms_turn`` items: accepted by the webhook, run and answered here or by the sweeper
    of any replica."""

    def __init__(
        self,
        redis_url: str,
        *,
        inline_budget_seconds: float,
        max_message_length: int,
        buttons: OfferedButtons,
        identity: Callable[[], IdentityStore],
        outbox: SmsOutbox,
        status_url: str = "",
        **work_options: Any,
    ) -> None:
        """``work_options`` go to :class:`InFlightWork`, as for :class:`SmsOutbox`;
        ``status_url`` is where Twilio reports inline replies' progress (the status route)."""
        self.durable = DurableTurns(InFlightWork(redis_url, SMS_TURN, **work_options), SMS)
        self.status_url = status_url
        self.inline_budget = inline_budget_seconds
        self.max_message_length = max_message_length
        self.buttons = buttons
        self.identity = identity
        self.outbox = outbox
        self.tasks = BackgroundTasks(TWILIO_SMS)
        #: Where Rasa keeps its agent (the Sanic app's context), known once the server starts.
        self.app_context: Any = None

    def start(self, app_context: Any) -> None:
        """This replica's sweeper resumes both kinds from now on (the server started)."""
        self.app_context = app_context
        self.durable.resume_with(self._resume_turn)
        self.durable.resume_with(self._resume_reply, self.outbox.work)

    async def accept(
        self, conversation_id: str, message_sid: str, payload: Dict[str, Any], started: float
    ) -> str:
        """Records the delivery and answers it: the TwiML the turn gives within the inline
        budget, else an empty one (the replies go by REST); a duplicate gets the stored answer.
        Raises a Redis failure when the delivery cannot be recorded (it is then not accepted).
        """
        found = await self.durable.accept(conversation_id, message_sid, payload)
        if isinstance(found, Existing):
            logger.info("SMS %s is a duplicate delivery (%s)", message_sid, found.state)
            return (found.outcome or {}).get("twiml") or EMPTY_TWIML
        inline = InlineAnswer()
        self.tasks.start(self._run_held(found, inline), f"SMS turn {message_sid}")
        remaining = max(0.0, self.inline_budget - (time.monotonic() - started))
        try:
            return await asyncio.wait_for(asyncio.shield(inline.future), remaining)
        except asyncio.TimeoutError:
            if inline.close():
                logger.info(
                    "SMS %s: turn still running after %.1f s; acknowledged, replying by REST",
                    message_sid,
                    self.inline_budget,
                )
                return EMPTY_TWIML
            # The turn took the inline answer just now: it is being stored.
            return await inline.future

    # -- running an item --------------------------------------------------------------------

    async def _held(self, work: InFlightWork, lease: Lease, job: Awaitable[None]) -> None:
        """Runs ``job`` while renewing ``lease`` (the replica that recorded the item)."""
        async with self.durable.held(lease, work):
            await job

    async def _run_held(self, lease: Lease, inline: InlineAnswer) -> None:
        await self._held(self.durable.work, lease, self._carry_out(lease, inline))

    async def _resume_turn(self, lease: Lease) -> None:
        """The sweeper's handler for a turn another replica left (it holds the lease)."""
        async with self.durable.tracked(lease):
            await self._carry_out(lease, None)

    async def _resume_reply(self, lease: Lease) -> None:
        """The sweeper's handler for a reply another replica left in the outbox."""
        async with self.durable.tracked(lease, self.outbox.work):
            await self.outbox.deliver(lease)

    async def deliver_reply(self, reply: Lease) -> None:
        """Sends a reply this replica just recorded in the outbox, renewing its lease."""
        await self._held(self.outbox.work, reply, self.outbox.deliver(reply))

    async def _carry_out(self, lease: Lease, inline: Optional[InlineAnswer]) -> None:
        """Runs the turn (or finds what it said) and answers it: inline when the webhook still
        waits, else through the outbox; then completes the item."""
        rendering = await self._rendering(lease)
        held, held_count = await self._held_messages(lease, rendering)
        messages = held + rendering.messages
        if not messages:
            if inline is not None and inline.take():
                inline.give(EMPTY_TWIML)
            await self._complete(lease, EMPTY_TWIML)
            return
        if (
            inline is not None
            and not held_count
            and all(not m.params for m in messages)
            and inline.take()
        ):
            answer = twiml(messages, f"{self.status_url}?reply_to={lease.item_id}")
            await self._answer_inline(lease, inline, answer)
            return
        if inline is not None and inline.take():
            inline.give(EMPTY_TWIML)  # what a custom payload or tappable options need goes by REST
        payload = lease.payload
        try:
            reply = await self.outbox.post(
                lease.conversation_id,
                lease.item_id,
                messages,
                payload["reply_to"],
                payload["from"],
            )
            if held_count:
                await self.whatsapp.release(lease.conversation_id, held_count)
        except REDIS_FAILURES as error:
            # Left running: its lease runs out and a sweeper answers it from the event log.
            logger.error(
                "SMS %s: reply not recorded in the outbox (%s); retried after the lease",
                lease.item_id,
                type(error).__name__,
            )
            return
        await self._complete(lease, EMPTY_TWIML, by_rest=True)
        if reply is not None:
            await self._held(self.outbox.work, reply, self.outbox.deliver(reply))

    async def _answer_inline(self, lease: Lease, inline: InlineAnswer, answer: str) -> None:
        """Stores the answer, then gives it to the webhook; when it could not be stored (the
        lease was lost to a replica that will answer by REST, or Redis failed and a sweeper
        will), the webhook answers with an empty TwiML instead: never twice."""
        store = asyncio.ensure_future(self._complete(lease, answer))
        try:
            await asyncio.shield(store)
        finally:
            # Even when a drain's hand-off cancels this task, the webhook must answer only
            # what was stored: that one Redis call is waited for.
            inline.give(answer if await store else EMPTY_TWIML)

    async def _complete(self, lease: Lease, answer: str, by_rest: bool = False) -> bool:
        """True when the item is done with ``answer`` here."""
        return await self.durable.complete(lease, {"twiml": answer, "by_rest": by_rest})

    @property
    def whatsapp(self) -> WhatsAppState:
        return WhatsAppState(self.identity().redis)

    async def _held_messages(
        self, lease: Lease, rendering: SmsRendering
    ) -> Tuple[Tuple[SmsMessage, ...], int]:
        """The messages held for this WhatsApp customer while the window was shut, rendered,
        and how many held entries they are (released once the reply is in the outbox). None
        for an SMS turn, an opt-out keyword (STOP, START) or an opted-out customer. A turn the
        bot does not answer (a person holds the conversation) still carries them: the agent's
        reply held for the window goes as soon as the customer writes."""
        payload = lease.payload
        if payload.get("channel") != WHATSAPP or payload.get("opt_out") is not None:
            return (), 0
        try:
            entries = await self.whatsapp.held(lease.conversation_id)
            if entries and not rendering.messages:
                if (await self.identity().profile(lease.conversation_id)).sms_opted_out:
                    return (), 0
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error("held WhatsApp messages unreadable: %s", type(error).__name__)
            return (), 0
        if not entries:
            return (), 0
        held = [BotMessage.from_rasa(m) for entry in entries for m in entry["messages"]]
        logger.info(
            "WhatsApp %s: sending %d message(s) held while the window was shut",
            lease.item_id,
            len(held),
        )
        return render_whatsapp(held).messages, len(entries)

    async def _rendering(self, lease: Lease) -> SmsRendering:
        """What the turn answers: nothing for an opt-out keyword or an opted-out number, the
        apology when the turn or its state failed."""
        payload = lease.payload
        cid = lease.conversation_id
        try:
            identity = self.identity()
            change = payload["opt_out"]
            if change is not None:
                await identity.set_sms_opt_out(cid, change)
                await record_phone_consent(
                    identity, cid, OPT_OUT if change else OPT_IN, payload.get("channel") or SMS
                )
                logger.info(
                    "conversation %s opted %s SMS", cid, "out of" if change else "back in to"
                )
                return SmsRendering(messages=())
            if (await identity.profile(cid)).sms_opted_out:
                logger.info(
                    "SMS %s from an opted-out number (conversation %s): not answered (START "
                    "re-subscribes)",
                    lease.item_id,
                    cid,
                )
                return SmsRendering(messages=())
            return await self._turn(lease)
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error(
                "SMS %s (conversation %s): state unavailable (%s); apologising",
                lease.item_id,
                cid,
                type(error).__name__,
            )
            return APOLOGY_RENDERING

    async def _turn(self, lease: Lease) -> SmsRendering:
        """Runs the turn once; when the event log already holds it (a replica that died after
        processing it), its replies come from the log."""
        payload = lease.payload
        agent = self.app_context.agent
        whatsapp = payload.get("channel") == WHATSAPP
        output = WhatsAppOutput() if whatsapp else TwilioSmsOutput()
        message = leased_message(lease, output, TWILIO_SMS)
        try:
            processed = await run_once(agent, message, trusted_payload=payload["trusted"])
        except TurnFailed as failure:
            logger.error(
                "SMS %s (conversation %s): turn failed: %s; apologising",
                lease.item_id,
                lease.conversation_id,
                failure.reason,
            )
            return APOLOGY_RENDERING
        except Exception:  # noqa: BLE001 - an SMS is answered, not dropped
            logger.exception(
                "SMS %s (conversation %s): turn raised; apologising",
                lease.item_id,
                lease.conversation_id,
            )
            return APOLOGY_RENDERING
        if not processed:
            for reply in await replay(agent, message):
                output.turn.add(reply)
            logger.warning(
                "SMS %s (conversation %s): processed by a replica that stopped; answering what "
                "it said (%d message(s))",
                lease.item_id,
                lease.conversation_id,
                len(output.turn.messages),
            )
        if whatsapp:
            shown = render_whatsapp(output.turn.messages)
            rendering = SmsRendering(messages=shown.messages, buttons=shown.buttons)
        else:
            rendering = render_sms(output.turn.messages, self.max_message_length)
        await self.buttons.remember(lease.conversation_id, rendering.buttons)
        return rendering

    # -- drain --------------------------------------------------------------------------------

    async def hand_off(self, deadline: float) -> None:
        """The drain's SMS step: waits for running items until shortly before ``deadline``,
        then stops those still running and releases their leases (turns and replies alike), so
        another replica's sweeper takes them over at once (rather than after the lease, or
        never)."""
        await self.durable.hand_off(deadline)
