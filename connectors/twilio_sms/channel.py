"""The Rasa side of the Twilio SMS connector: its options, the input channel with its two routes
and the output channels.

Rasa's stock ``twilio`` channel checks no signature, answers only after the whole turn (Twilio
gives up after 15 s and the message is lost), blocks the event loop with the synchronous Twilio
client and runs Twilio's duplicate deliveries twice. ``TwilioSmsInput`` instead:

- checks ``X-Twilio-Signature`` before reading anything (:mod:`.auth`);
- maps ``From`` (also ``whatsapp:+…``) to ``tel:+E164`` and the conversation (identity); a
  WhatsApp sender opens WhatsApp's 24-hour window (:mod:`omnichannel.whatsapp_window`) and its
  turn is answered by the ``whatsapp`` output channel (``channel: whatsapp`` variations) and
  WhatsApp's renderer;
- records each delivery as durable in-flight work before answering it (:mod:`.turns`), so a
  duplicate on any replica is not a second turn (it gets the first delivery's stored answer,
  or an empty TwiML while that runs) and a replica that dies leaves the turn to another one;
- answers inline (TwiML) when the turn ends within ``inline_budget_seconds``; otherwise it
  acknowledges with an empty TwiML at the budget and texts the replies through the SMS outbox
  (:mod:`.outbox`: recorded, then sent, reconciled with Twilio's records when a send's outcome
  is unknown) when the turn ends;
- handles the opt-out keywords before Rasa sees them (on SMS and WhatsApp alike), maps numbered
  replies and tapped WhatsApp options back to the payloads offered, turns media-only messages
  into intents (omnichannel/media.py), and records what Twilio reports to
  ``/webhooks/twilio_sms/status``: each message's progress (omnichannel/receipts.py) and
  failures, a WhatsApp message that failed for the window or the number going by SMS or held
  instead (:meth:`SmsSender.plan`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from multidict import MultiDict
from pydantic import Field
from rasa.core.channels.channel import InputChannel, OutputChannel
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.drain import drain_before_stop, drain_of
from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.twilio_sms.auth import MAX_REQUEST_BYTES, WebhookValidator, head_refusal
from connectors.twilio_sms.outbox import SmsOutbox
from connectors.twilio_sms.state import DeliveryLedger, OfferedButtons
from connectors.twilio_sms.turns import APOLOGY_TWIML, SmsTurns
from connectors.twilio_sms.wire import (
    EMPTY_TWIML,
    InboundSms,
    Rejected,
    StatusCallback,
    idempotency_token,
)
from omnichannel import metrics
from omnichannel.channels import TWILIO_SMS, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.masking import mask
from omnichannel.options import ConnectorOptions
from omnichannel.outbound.consent import OPT_OUT, record_phone_consent
from omnichannel.receipts import STATUSES, Receipts
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import SMS_MAX_LENGTH, match_button_reply
from omnichannel.settings import Settings, load_settings
from omnichannel.sms_sender import (
    STATUS_PATH,
    SmsRefused,
    SmsSender,
    SmsSendFailed,
    require_twilio,
)
from omnichannel.whatsapp_templates import template_of
from omnichannel.whatsapp_window import WhatsAppState

logger = logging.getLogger(__name__)

#: Twilio's own deadline is 15 s; the budget must leave room for the network on both sides.
MAX_INLINE_BUDGET = 12.0
#: Longest a MessageSid or an offered option is remembered (Twilio retries within hours).
MAX_TTL_SECONDS = 30 * 24 * 3600

#: WhatsApp errors after which a message goes another way (SMS, or held): outside the window
#: (63016), not on WhatsApp or a bad address (63024, 63003). Blocked by the user (63014) marks
#: the number unreachable on WhatsApp but sends nothing elsewhere.
WHATSAPP_WINDOW_CLOSED = "63016"
WHATSAPP_UNREACHABLE = frozenset({"63024", "63003", "63014"})
WHATSAPP_BLOCKED = "63014"


class TwilioSmsOptions(ConnectorOptions):
    """The tunables under ``connectors.twilio_sms.channel.TwilioSmsInput:`` in credentials.yml
    (secrets come from the environment)."""

    #: Answer inline within this, else acknowledge and reply by REST.
    inline_budget_seconds: float = Field(default=5.0, gt=0, le=MAX_INLINE_BUDGET)
    #: One SMS body at most (Twilio's limit is 1600).
    max_message_length: int = Field(default=SMS_MAX_LENGTH, ge=1, le=SMS_MAX_LENGTH)
    #: How long a MessageSid (its turn, its reply in the outbox) is remembered.
    dedupe_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=MAX_TTL_SECONDS)
    #: How long "reply 1 for …" stays answerable.
    buttons_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=MAX_TTL_SECONDS)


def _twiml_response(body: str) -> HTTPResponse:
    return response.text(body, content_type="text/xml; charset=utf-8")


def _refusal(kind: str, rejection: Rejected) -> HTTPResponse:
    logger.warning("SMS %s rejected (%d): %s", kind, rejection.status, rejection.reason)
    return response.text(rejection.reason, status=rejection.status)


def _unsigned_refusal(request: Request) -> Optional[HTTPResponse]:
    """A request that cannot be Twilio's by its headers, refused before its body is read."""
    rejection = head_refusal(request.headers)
    return None if rejection is None else _refusal(request.path.rsplit("/", 1)[-1], rejection)


def _limit_refusal(status: int, reason: str) -> HTTPResponse:
    return _refusal("body", Rejected(status, reason))


class TwilioSmsPushOutput(OutputChannel):
    """Sends each bot message by REST as it comes: for turns Rasa runs outside a webhook
    (``/conversations/<id>/trigger_intent?output_channel=twilio_sms``, reminders). It goes on
    the messaging channel the customer last wrote on (:meth:`SmsSender.send_to_customer`);
    outside WhatsApp's window as the response's template when it declares one
    (``metadata.whatsapp_template``, filled with the message's values), else by SMS or held.
    Rasa picks variations by this channel's name, ``twilio_sms``, before the channel is known."""

    @classmethod
    def name(cls) -> str:
        return TWILIO_SMS

    def __init__(self, sender: SmsSender, buttons: OfferedButtons) -> None:
        self.sender = sender
        self.buttons = buttons

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        template = template_of(message)
        try:
            delivery = await self.sender.send_to_customer(
                recipient_id, [BotMessage.from_rasa(message)], template=template
            )
        except (SmsRefused, SmsSendFailed) as error:
            logger.warning("message to conversation %s not sent: %s", recipient_id, error)
            return
        if delivery.buttons:
            # The options offered ("Reply 1 for …", tappable ones) must be answerable, as
            # after a webhook turn.
            try:
                await self.buttons.remember(recipient_id, delivery.buttons)
            except REDIS_FAILURES as error:
                logger.error("options for %s not kept: %s", recipient_id, type(error).__name__)


class TwilioSmsInput(InputChannel):
    """``POST /webhooks/twilio_sms/webhook`` (messages) and ``/status`` (delivery reports)."""

    @classmethod
    def name(cls) -> str:
        return TWILIO_SMS

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InputChannel:
        settings = load_settings()
        require_twilio(settings)
        # A key left blank in credentials.yml means its default.
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(settings, TwilioSmsOptions.parse(f"{__name__}.{cls.__name__}", given))

    def __init__(self, settings: Settings, options: TwilioSmsOptions = TwilioSmsOptions()) -> None:
        self.settings = settings
        self.options = options
        self.validator = WebhookValidator.from_settings(settings)
        self.region = settings.default_phone_region
        self.ledger = DeliveryLedger(settings.redis_url, options.dedupe_ttl_seconds)
        self.buttons = OfferedButtons(settings.redis_url, options.buttons_ttl_seconds)
        self.outbox = SmsOutbox(
            settings.redis_url,
            lambda: self._sender(self._identity()),
            keep_seconds=options.dedupe_ttl_seconds,
        )
        self.turns = SmsTurns(
            settings.redis_url,
            keep_seconds=options.dedupe_ttl_seconds,
            inline_budget_seconds=options.inline_budget_seconds,
            max_message_length=options.max_message_length,
            buttons=self.buttons,
            identity=self._identity,
            outbox=self.outbox,
            status_url=settings.public_base_url + STATUS_PATH,
        )

    def _identity(self) -> IdentityStore:
        """The identity store on this event loop's client for the configured Redis."""
        return IdentityStore(redis_client(self.settings.redis_url))

    def _sender(self, identity: IdentityStore) -> SmsSender:
        return SmsSender(
            self.settings, max_message_length=self.options.max_message_length, identity=identity
        )

    def get_output_channel(self) -> OutputChannel:
        return TwilioSmsPushOutput(self._sender(self._identity()), self.buttons)

    def _signed_form(self, request: Request) -> MultiDict:
        """The form (its body read and bounded by http_limits), checked against its signature."""
        return self.validator.signed_form(
            request.path, request.query_string, request.headers, request.body or b""
        )

    def blueprint(self, on_new_message: Any) -> ChannelBlueprint:
        """The routes. Turns do not go through Rasa's ``on_new_message``: they may run twice
        (on a takeover), so they run through :func:`connectors.turns.once.run_once` on the app's
        agent, which skips a message the event log already holds."""
        bp = ChannelBlueprint("omni_twilio_sms", __name__)

        @bp.listener("before_server_start")
        async def join_drain(app: Sanic, _: Any) -> None:
            drain_of(app).add_step(self.turns.hand_off)

        @bp.listener("after_server_start")
        async def resume_abandoned_work(app: Sanic, _: Any) -> None:
            self.turns.start(app.ctx)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/webhook", methods=["POST"])
        @bounded_body(MAX_REQUEST_BYTES, admit=_unsigned_refusal, refuse=_limit_refusal)
        async def webhook(request: Request) -> HTTPResponse:
            started = time.monotonic()
            try:
                inbound = InboundSms.parse(self._signed_form(request), self.region)
            except Rejected as rejection:
                return _refusal("webhook", rejection)
            if inbound.is_empty:
                logger.info(
                    "SMS %s has no text and no media: nothing to answer", inbound.message_sid
                )
                return _twiml_response(EMPTY_TWIML)
            token = idempotency_token(request.headers.get("i-twilio-idempotency-token"))
            if self.turns.app_context is None:
                self.turns.app_context = request.app.ctx
            return _twiml_response(await self._answer(inbound, token, started))

        @bp.route("/status", methods=["POST"])
        @bounded_body(MAX_REQUEST_BYTES, admit=_unsigned_refusal, refuse=_limit_refusal)
        async def status(request: Request) -> HTTPResponse:
            try:
                callback = StatusCallback.parse(
                    self._signed_form(request),
                    self.region,
                    reply_to=request.args.get("reply_to"),
                )
            except Rejected as rejection:
                return _refusal("status", rejection)
            try:
                await self._record_status(callback)
            except (StateUnavailable, *REDIS_FAILURES) as error:
                logger.error(
                    "status %s of %s not recorded: %s",
                    callback.status,
                    callback.message_sid,
                    mask(str(error)) or type(error).__name__,
                )
                return response.text("state unavailable", status=503)
            return response.empty()

        drain_before_stop(bp)
        return bp

    # -- messages -----------------------------------------------------------------------------

    async def _answer(self, inbound: InboundSms, token: Optional[str], started: float) -> str:
        """The TwiML for one delivery. When the delivery cannot be recorded (Redis), it is not
        accepted: the texter gets an apology inline."""
        try:
            message_sid = await self.ledger.delivery_of(inbound.message_sid, token)
            identity = self._identity()
            cid = await identity.resolve_conversation(inbound.address, channel=inbound.channel)
            if inbound.channel == WHATSAPP:
                # The customer wrote: free-form replies may go for 24 hours, from this sender.
                await WhatsAppState(identity.redis).customer_wrote(cid, inbound.to or None)
            payload = await self._turn_payload(inbound, cid, identity)
            return await self.turns.accept(cid, message_sid, payload, started)
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error(
                "%s %s from %s: conversation state unavailable (%s); apologising",
                _kind(inbound.channel),
                inbound.message_sid,
                inbound.address.masked(),
                mask(str(error)) or type(error).__name__,
            )
            return APOLOGY_TWIML

    async def _turn_payload(
        self, inbound: InboundSms, cid: str, identity: IdentityStore
    ) -> Dict[str, Any]:
        """All it takes to run the turn again on any replica (the ``sms_turn`` item)."""
        profile = await identity.profile(cid)
        text, trusted, metadata = await self._user_message(inbound, cid)
        return {
            "text": text,
            "trusted": trusted,
            "metadata": metadata,
            "channel": inbound.channel,
            "reply_to": inbound.reply_to,
            "from": inbound.to or None,
            "opt_out": inbound.opt_out_change(profile.sms_opted_out),
        }

    async def _user_message(
        self, inbound: InboundSms, cid: str
    ) -> Tuple[str, bool, Dict[str, Any]]:
        """What Rasa gets: the text, the intent a keyword or media alone stands for, or the
        payload of the option the customer tapped (WhatsApp) or chose by number or title;
        whether it is such a payload (the connector's own intent or one the bot offered), which
        Rasa may read as an intent (the customer's own text is not: ``run_turn`` escapes a
        leading "/"); and its metadata. A tapped id the bot did not offer (a stale or forged
        one) counts as the customer's text, the option's title."""
        text = inbound.intent or inbound.body.strip() or (inbound.tapped_title or "")
        trusted = inbound.intent is not None
        metadata = inbound.metadata()
        if inbound.intent is None:
            offered = await self.buttons.get(cid)
            chosen = None
            if inbound.tapped is not None:
                chosen = next((b for b in offered if b.payload == inbound.tapped), None)
                metadata["tapped"] = True
            if chosen is None:
                chosen = match_button_reply(text, offered)
            if chosen is not None:
                text = chosen.payload
                trusted = True
                # What the chat history shows for this message (as for a clicked chat button),
                # rather than the payload the reply stands for.
                metadata["button_title"] = chosen.title
        return text, trusted, metadata

    # -- status callbacks ----------------------------------------------------------------------

    async def _record_status(self, callback: StatusCallback) -> None:
        """A status callback: the message's receipt moves on; a failure is counted, named in
        the log and kept on the profile; a WhatsApp failure for the window or the number sends
        the message by SMS or holds it (:meth:`_fall_back`)."""
        channel = callback.channel
        status = callback.status if callback.status in STATUSES else "other"
        metrics.MESSAGE_STATUSES.labels(channel=channel, status=status).inc()
        identity = self._identity()
        recipient = callback.recipient.masked() if callback.recipient else "an unknown number"
        cid = await identity.lookup(callback.recipient) if callback.recipient else None
        if callback.failed:
            metrics.MESSAGE_FAILURES.labels(
                channel=channel, error=metrics.error_label(callback.error_code)
            ).inc()
            logger.warning(
                "%s %s to %s %s (error %s%s)",
                _kind(channel),
                callback.message_sid,
                recipient,
                callback.status,
                callback.error_code or "none",
                f": {ERROR_NAMES[callback.error_code]}"
                if callback.error_code in ERROR_NAMES
                else "",
            )
        else:
            logger.debug("%s %s is %s", _kind(channel), callback.message_sid, callback.status)
        if cid is None:
            if callback.failed:
                logger.warning("%s: no conversation for %s", callback.message_sid, recipient)
            return
        receipt = await Receipts(identity.redis).record(
            cid,
            callback.message_sid,
            channel=channel,
            status=callback.status,
            error_code=callback.error_code,
            reply_to=callback.reply_to,
        )
        if not callback.failed:
            return
        await identity.record_sms_failure(
            cid, sid=callback.message_sid, status=callback.status, error_code=callback.error_code
        )
        if callback.opted_out:
            await identity.set_sms_opt_out(cid, True)
            await record_phone_consent(identity, cid, OPT_OUT, "twilio")
            logger.info("%s is unsubscribed at Twilio: opt-out recorded", recipient)
        if channel != WHATSAPP:
            return
        state = WhatsAppState(identity.redis)
        if callback.error_code == WHATSAPP_WINDOW_CLOSED:
            await state.close(cid)
        elif callback.error_code in WHATSAPP_UNREACHABLE:
            await state.mark_unreachable(cid, callback.error_code)
        else:
            return
        if callback.error_code == WHATSAPP_BLOCKED:
            logger.warning("%s blocked our WhatsApp messages: not sent another way", recipient)
            return
        if receipt is not None and (receipt.body or receipt.media):
            await self._fall_back(cid, callback.message_sid, receipt.body, receipt.media, identity)

    async def _fall_back(
        self,
        cid: str,
        failed_sid: str,
        body: str,
        media: Sequence[str],
        identity: IdentityStore,
    ) -> None:
        """Sends a WhatsApp message that failed after it was created (63016, 63024, 63003)
        another way: by SMS through the outbox (recorded first, so a replica's death does not
        lose it; its item id is the failed message's, so a repeated callback sends nothing
        twice), or held until the customer writes on WhatsApp again."""
        messages = [BotMessage(text=body)] + [BotMessage(image=url) for url in media]
        sender = self._sender(identity)
        try:
            plan = await sender.plan(cid, messages, channel=WHATSAPP)
        except SmsRefused as refused:
            logger.warning("WhatsApp %s not sent another way: %s", failed_sid, refused)
            return
        except SmsSendFailed as failed:
            logger.error("WhatsApp %s not sent another way: %s", failed_sid, failed)
            return
        if plan.route == metrics.ROUTE_HELD:
            await sender.hold(cid, messages, str(plan.reason))
            return
        reply = await self.outbox.post(
            cid, f"{failed_sid}_fallback", plan.messages, str(plan.to), plan.sender
        )
        logger.warning(
            "WhatsApp %s failed (%s): sent %s instead", failed_sid, plan.reason, plan.route
        )
        plan.sent(())
        if reply is not None:
            self.turns.tasks.start(
                self.turns.deliver_reply(reply), f"fallback of WhatsApp {failed_sid}"
            )


def _kind(channel: str) -> str:
    """How logs name a message of ``channel``."""
    return "WhatsApp message" if channel == WHATSAPP else "SMS"


#: What the WhatsApp and SMS errors the connector acts on mean, for the log.
ERROR_NAMES = {
    "21610": "the number opted out (STOP)",
    "63003": "not a valid WhatsApp address",
    "63014": "the customer blocked our WhatsApp messages",
    "63016": "outside WhatsApp's 24-hour window",
    "63018": "WhatsApp rate or tier limit",
    "63024": "the number is not on WhatsApp",
}
