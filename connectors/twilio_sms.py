"""Twilio SMS connector: customers text the assistant's number and land in their one conversation.

Rasa's stock ``twilio`` channel checks no signature, answers only after the whole turn (Twilio
gives up after 15 s and the message is lost), blocks the event loop with the synchronous Twilio
client and runs Twilio's duplicate deliveries twice. This connector:

- checks ``X-Twilio-Signature`` with twilio-python's ``RequestValidator`` against the public URL
  Twilio called (``PUBLIC_BASE_URL`` + path; ``X-Forwarded-*`` only with
  ``TRUST_PROXY_HEADERS``) before reading anything: unsigned or forged requests get 403;
- maps ``From`` (also ``whatsapp:+…``) to ``tel:+E164`` and the conversation (identity);
- claims each ``MessageSid`` (and ``I-Twilio-Idempotency-Token``) in Redis with ``SET NX``, so a
  duplicate delivery on any replica is not a second turn: it gets the first delivery's stored
  answer, or an empty TwiML while the first one still runs;
- answers inline (TwiML) when the turn ends within ``inline_budget_seconds``; otherwise it
  acknowledges with an empty TwiML at the budget and sends the replies through the REST API
  (twilio-python's async client) when the turn ends;
- handles the opt-out keywords (STOP family / ``OptOutType``) before Rasa sees them, maps
  numbered button replies back to payloads, turns picture-only MMS into a turn, and records
  failed deliveries reported to ``/webhooks/twilio_sms/status``.

:class:`SmsSender` is the one way any part of the project sends an SMS (the action server's
"text me that" included): it refuses opted-out numbers and never retries a send that may have
reached Twilio.

credentials.yml tunables (secrets come from the environment)::

    connectors.twilio_sms.TwilioSmsInput:
      inline_budget_seconds: 5      # answer inline within this, else ack and reply by REST
      max_message_length: 1600      # one SMS body at most (Twilio's limit is 1600)
      dedupe_ttl_seconds: 86400     # how long a MessageSid is remembered
      buttons_ttl_seconds: 86400    # how long "reply 1 for …" stays answerable
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, fields
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qsl

from multidict import MultiDict
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from connectors.turns import TurnFailed, run_turn
from omnichannel.identity import (
    Address,
    IdentityStore,
    InvalidAddress,
    mask,
    phone_address,
)
from omnichannel.redis_client import (
    REDIS_FAILURES,
    StateUnavailable,
    conversation_key,
    global_key,
    redis_client,
)
from omnichannel.rendering.messages import BotMessage, Button, TurnOutput
from omnichannel.rendering.sms import (
    SMS_MAX_LENGTH,
    SmsMessage,
    SmsRendering,
    match_button_reply,
    render_sms,
)
from omnichannel.settings import ConfigError, Settings, load_settings
from omnichannel.sms_sender import (
    OPTED_OUT_ERROR,
    SmsRefused,
    SmsSender,
    SmsSendFailed,
    require_twilio,
)

logger = logging.getLogger(__name__)

CHANNEL_NAME = "twilio_sms"
WEBHOOK_PATH = f"/webhooks/{CHANNEL_NAME}/webhook"
STATUS_PATH = f"/webhooks/{CHANNEL_NAME}/status"

#: Twilio's own deadline is 15 s; the budget must leave room for the network on both sides.
MAX_INLINE_BUDGET = 12.0
#: A Twilio webhook is a few hundred bytes to a few KB; anything far larger is not Twilio.
MAX_REQUEST_BYTES = 64 * 1024
MAX_FIELDS = 200
MAX_BODY_CHARS = 4096
MAX_FIELD_CHARS = 4096
MAX_URL_CHARS = 2048
MAX_MEDIA = 10
SID_PATTERN = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
STATUS_PATTERN = re.compile(r"[a-z_-]{1,32}")
ERROR_CODE_PATTERN = re.compile(r"\d{1,10}")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: Twilio's default opt-out keywords (whole message, any case) and their opt-in counterparts.
STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_KEYWORDS = frozenset({"START", "UNSTOP"})
#: "YES" re-subscribes only a number that is opted out; otherwise it is an ordinary answer.
START_IF_OPTED_OUT = frozenset({"YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
#: Intent messages sent to Rasa for turns that have no text of their own.
HELP_INTENT = "/help"
PICTURE_INTENT = "/send_picture"

FAILED_STATUSES = frozenset({"failed", "undelivered"})

APOLOGY = (
    "Sorry, something went wrong on our side and your message could not be handled. "
    "Please try again in a few minutes."
)


class Rejected(Exception):
    """A request we refuse: ``status`` and a short ``reason`` (safe to log and to return)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioSmsConfig:
    """The connector's tunables from credentials.yml."""

    inline_budget_seconds: float = 5.0
    max_message_length: int = SMS_MAX_LENGTH
    dedupe_ttl_seconds: int = 24 * 3600
    buttons_ttl_seconds: int = 24 * 3600

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, Any]) -> TwilioSmsConfig:
        unknown = set(credentials) - {item.name for item in fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown {CHANNEL_NAME} setting(s) in credentials.yml: "
                + ", ".join(sorted(unknown))
            )
        values = {key: value for key, value in credentials.items() if value is not None}
        try:
            config = cls(
                inline_budget_seconds=float(values.get("inline_budget_seconds", 5.0)),
                max_message_length=int(values.get("max_message_length", SMS_MAX_LENGTH)),
                dedupe_ttl_seconds=int(values.get("dedupe_ttl_seconds", 24 * 3600)),
                buttons_ttl_seconds=int(values.get("buttons_ttl_seconds", 24 * 3600)),
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{CHANNEL_NAME} settings in credentials.yml: {error}") from None
        if not 0 < config.inline_budget_seconds <= MAX_INLINE_BUDGET:
            raise ConfigError(
                f"inline_budget_seconds must be in (0, {MAX_INLINE_BUDGET:g}] (Twilio waits 15 s)"
            )
        if not 1 <= config.max_message_length <= SMS_MAX_LENGTH:
            raise ConfigError(f"max_message_length must be 1..{SMS_MAX_LENGTH}")
        if config.dedupe_ttl_seconds < 60 or config.buttons_ttl_seconds < 60:
            raise ConfigError("dedupe_ttl_seconds and buttons_ttl_seconds must be >= 60")
        return config


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


def _first_forwarded(value: Optional[str]) -> str:
    return (value or "").split(",")[0].strip()


_FORWARDED_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def public_url(
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    base_url: str,
    trust_proxy_headers: bool,
) -> str:
    """The URL Twilio called, which is what it signed.

    TLS usually ends at a proxy, so the URL this process sees (``http://internal:5005``) is not
    the one Twilio signed. By default the configured public base URL is used; only when the
    operator says a proxy they control sets them are ``X-Forwarded-Proto``/``X-Forwarded-Host``
    believed (a client could otherwise pick the URL it is checked against).
    """
    base = base_url.rstrip("/")
    if trust_proxy_headers:
        proto = _first_forwarded(headers.get("x-forwarded-proto")).lower()
        host = _first_forwarded(headers.get("x-forwarded-host")) or (headers.get("host") or "")
        if proto in ("http", "https") and _FORWARDED_HOST.fullmatch(host):
            base = f"{proto}://{host}"
    url = base + path
    return f"{url}?{query_string}" if query_string else url


def read_signed_form(request: Request, settings: Settings) -> MultiDict:
    """The request's form parameters, once their Twilio signature is proven; else Rejected.

    Parameters are not whitelisted before the check (Twilio adds new ones without notice and
    signs them all); blank values are kept, as Twilio signs those too.
    """
    if len(request.body or b"") > MAX_REQUEST_BYTES:
        raise Rejected(413, "request body too large")
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Rejected(415, "expected application/x-www-form-urlencoded")
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise Rejected(403, "missing X-Twilio-Signature")
    try:
        text = (request.body or b"").decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "body is not valid UTF-8 form data") from None
    form = MultiDict(pairs)
    url = public_url(
        request.path,
        request.query_string,
        request.headers,
        settings.public_base_url,
        settings.trust_proxy_headers,
    )
    if not RequestValidator(settings.twilio_auth_token).validate(url, form, signature):
        raise Rejected(403, "invalid X-Twilio-Signature")
    account = form.get("AccountSid")
    if account is not None and account != settings.twilio_account_sid:
        raise Rejected(403, "request for another Twilio account")
    return form


# ---------------------------------------------------------------------------------------------
# Protocol shapes
# ---------------------------------------------------------------------------------------------


def _field(form: MultiDict, name: str, limit: int = MAX_FIELD_CHARS) -> Optional[str]:
    value = form.get(name)
    if value is None:
        return None
    if len(value) > limit:
        raise Rejected(413, f"{name} longer than {limit} characters")
    if _CONTROL_CHARS.search(value):
        raise Rejected(400, f"{name} contains control characters")
    return value


def _sid(form: MultiDict, *names: str) -> str:
    for name in names:
        value = _field(form, name)
        if value:
            if not SID_PATTERN.fullmatch(value):
                raise Rejected(400, f"{name} is not a Twilio SID")
            return value
    raise Rejected(400, f"{names[0]} missing")


@dataclass(frozen=True)
class InboundMedia:
    url: str
    content_type: str

    def as_dict(self) -> Dict[str, str]:
        return {"url": self.url, "content_type": self.content_type}


@dataclass(frozen=True)
class InboundSms:
    """An incoming message webhook, checked field by field."""

    message_sid: str
    sender: str  # ``From`` as received (``+1…`` or ``whatsapp:+1…``), never logged
    address: Address
    to: str
    body: str
    media: Tuple[InboundMedia, ...] = ()
    opt_out_type: Optional[str] = None

    @classmethod
    def parse(cls, form: MultiDict) -> InboundSms:
        message_sid = _sid(form, "MessageSid", "SmsMessageSid", "SmsSid")
        sender = _field(form, "From", 64)
        if not sender:
            raise Rejected(400, "From missing")
        try:
            address = phone_address(sender)
        except InvalidAddress as error:
            raise Rejected(400, f"From: {error}") from None
        body = _field(form, "Body", MAX_BODY_CHARS)
        if body is None:
            raise Rejected(400, "Body missing")
        raw_count = _field(form, "NumMedia", 16) or "0"
        if not raw_count.isdecimal() or int(raw_count) > MAX_MEDIA:
            raise Rejected(400, f"NumMedia must be 0..{MAX_MEDIA}")
        media = []
        for index in range(int(raw_count)):
            url = _field(form, f"MediaUrl{index}", MAX_URL_CHARS)
            if not url or not url.lower().startswith(("https://", "http://")):
                raise Rejected(400, f"MediaUrl{index} missing or not an http(s) URL")
            content_type = _field(form, f"MediaContentType{index}", 128) or ""
            media.append(InboundMedia(url=url, content_type=content_type))
        opt_out = (_field(form, "OptOutType", 32) or "").upper()
        return cls(
            message_sid=message_sid,
            sender=sender.strip(),
            address=address,
            to=(_field(form, "To", 64) or "").strip(),
            body=body,
            media=tuple(media),
            opt_out_type=opt_out if opt_out in ("STOP", "START", "HELP") else None,
        )

    @property
    def keyword(self) -> Optional[str]:
        """The opt-out family word the whole message is, upper-cased, if it is one."""
        word = self.body.strip().rstrip(".!").strip().upper()
        keywords = STOP_KEYWORDS | START_KEYWORDS | START_IF_OPTED_OUT | HELP_KEYWORDS
        return word if word in keywords else None

    @property
    def reply_to(self) -> str:
        """Where replies by REST go: the sender's E.164 number, on WhatsApp if they wrote there."""
        if self.sender.lower().startswith("whatsapp:"):
            return f"whatsapp:{self.address.value}"
        return self.address.value

    def metadata(self) -> Dict[str, Any]:
        return {
            "channel": "sms",
            "address": str(self.address),
            "message_sid": self.message_sid,
            "to": self.to,
            "media": [item.as_dict() for item in self.media],
        }


@dataclass(frozen=True)
class StatusCallback:
    """A message status callback (``MessageStatus``, ``ErrorCode``) for one of our SMS."""

    message_sid: str
    status: str
    error_code: Optional[str]
    recipient: Optional[Address]

    @classmethod
    def parse(cls, form: MultiDict) -> StatusCallback:
        message_sid = _sid(form, "MessageSid", "SmsSid")
        status = (_field(form, "MessageStatus", 32) or _field(form, "SmsStatus", 32) or "").lower()
        if not STATUS_PATTERN.fullmatch(status):
            raise Rejected(400, "MessageStatus missing or malformed")
        error_code = _field(form, "ErrorCode", 16) or None
        if error_code is not None and not ERROR_CODE_PATTERN.fullmatch(error_code):
            raise Rejected(400, "ErrorCode is not a number")
        to = _field(form, "To", 64)
        recipient = None
        if to:
            try:
                recipient = phone_address(to)
            except InvalidAddress as error:
                raise Rejected(400, f"To: {error}") from None
        return cls(message_sid, status, error_code, recipient)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES or self.error_code == OPTED_OUT_ERROR


# ---------------------------------------------------------------------------------------------
# TwiML
# ---------------------------------------------------------------------------------------------


def twiml(messages: Sequence[SmsMessage] = ()) -> str:
    """A TwiML answer carrying ``messages``; an empty ``<Response/>`` means "no reply"."""
    answer = MessagingResponse()
    for message in messages:
        element = answer.message(message.body)
        for url in message.media_urls:
            element.media(url)
    return answer.to_xml()


EMPTY_TWIML = twiml()


def twiml_response(body: str) -> HTTPResponse:
    return response.text(body, content_type="text/xml; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# Redis state: delivery dedupe and offered buttons
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming a delivery: ``first`` is True for the delivery that runs the turn;
    duplicates carry the stored answer (empty TwiML while the first one still runs)."""

    first: bool
    answer: str = EMPTY_TWIML


class DeliveryLedger:
    """Which message deliveries were seen, across replicas (Redis ``SET NX`` with a TTL).

    ``omni:sms:msg:<MessageSid>`` holds ``{"state": "running"}`` until the turn ends, then
    ``{"state": "done", "twiml": …}``: the answer Twilio got, so a duplicate gets the same one.
    ``omni:sms:idem:<token>`` maps an ``I-Twilio-Idempotency-Token`` to the MessageSid it came
    with, so a retried delivery is recognised by either.

    A replica that dies mid-turn leaves its record "running": redeliveries then get an empty
    answer instead of a second turn. For SMS, at most once is the safer side (the customer can
    write again; a double answer or a double refund request cannot be taken back).
    """

    def __init__(self, ttl_seconds: int, redis: Any = None) -> None:
        self.ttl = ttl_seconds
        self._redis = redis

    @property
    def redis(self) -> Any:
        return self._redis if self._redis is not None else redis_client()

    @staticmethod
    def message_key(message_sid: str) -> str:
        return global_key("sms", "msg", message_sid)

    @staticmethod
    def token_key(token: str) -> str:
        return global_key("sms", "idem", token)

    async def claim(self, message_sid: str, token: Optional[str]) -> Claim:
        sid = message_sid
        if token:
            key = self.token_key(token)
            if not await self.redis.set(key, message_sid, nx=True, ex=self.ttl):
                earlier = await self.redis.get(key)
                sid = earlier.decode() if isinstance(earlier, bytes) else (earlier or message_sid)
        record = json.dumps({"state": "running", "at": time.time()})
        if sid == message_sid and await self.redis.set(
            self.message_key(sid), record, nx=True, ex=self.ttl
        ):
            return Claim(first=True)
        stored = await self.redis.get(self.message_key(sid))
        try:
            state = json.loads(stored) if stored else {}
        except ValueError:
            state = {}
        return Claim(first=False, answer=state.get("twiml") or EMPTY_TWIML)

    async def finish(self, message_sid: str, answer: str) -> None:
        record = json.dumps({"state": "done", "twiml": answer, "at": time.time()})
        await self.redis.set(self.message_key(message_sid), record, ex=self.ttl)


def buttons_key(conversation_id: str) -> str:
    return conversation_key(conversation_id, "sms_buttons")


async def offered_buttons(redis: Any, conversation_id: str) -> Tuple[Button, ...]:
    raw = await redis.get(buttons_key(conversation_id))
    if not raw:
        return ()
    return tuple(Button(title=item["title"], payload=item["payload"]) for item in json.loads(raw))


async def remember_buttons(
    redis: Any, conversation_id: str, buttons: Sequence[Button], ttl: int
) -> None:
    """Keep the numbered options a turn offered by SMS, so the next "1" means the first one."""
    key = buttons_key(conversation_id)
    if buttons:
        value = json.dumps([{"title": b.title, "payload": b.payload} for b in buttons])
        await redis.set(key, value, ex=ttl)
    else:
        await redis.delete(key)


# ---------------------------------------------------------------------------------------------
# Sending by REST
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Output channels
# ---------------------------------------------------------------------------------------------


class TwilioSmsOutput(OutputChannel):
    """Collects one turn's bot messages; the connector renders them as TwiML or REST SMS.

    ``name()`` is the input channel's, so designers' ``channel: twilio_sms`` variations apply.
    """

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    def __init__(self) -> None:
        self.turn = TurnOutput()

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        self.turn.add(message)


class TwilioSmsPushOutput(OutputChannel):
    """Sends each bot message by REST as it comes: for turns Rasa runs outside a webhook
    (``/conversations/<id>/trigger_intent?output_channel=twilio_sms``, reminders)."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    def __init__(self, sender: SmsSender, buttons_ttl_seconds: int) -> None:
        self.sender = sender
        self.buttons_ttl_seconds = buttons_ttl_seconds

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        rendering = render_sms([BotMessage.from_rasa(message)], self.sender.max_message_length)
        try:
            await self.sender.send_rendered(recipient_id, rendering.messages)
        except (SmsRefused, SmsSendFailed) as error:
            logger.warning("SMS to conversation %s not sent: %s", recipient_id, error)
            return
        if rendering.buttons:
            # The texted "Reply 1 for …" must be answerable, as after a webhook turn.
            try:
                await remember_buttons(
                    redis_client(), recipient_id, rendering.buttons, self.buttons_ttl_seconds
                )
            except REDIS_FAILURES as error:
                logger.error("SMS options for %s not kept: %s", recipient_id, type(error).__name__)


# ---------------------------------------------------------------------------------------------
# Input channel
# ---------------------------------------------------------------------------------------------


class TwilioSmsInput(InputChannel):
    """``POST /webhooks/twilio_sms/webhook`` (messages) and ``/status`` (delivery reports)."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InputChannel:
        settings = load_settings()
        require_twilio(settings)
        return cls(settings, TwilioSmsConfig.from_credentials(credentials or {}))

    def __init__(self, settings: Settings, config: TwilioSmsConfig = TwilioSmsConfig()) -> None:
        self.settings = settings
        self.config = config
        self.identity = IdentityStore()
        self.ledger = DeliveryLedger(config.dedupe_ttl_seconds)
        self.sender = SmsSender(settings, max_message_length=config.max_message_length)
        self._background: Set[asyncio.Task] = set()

    def get_output_channel(self) -> OutputChannel:
        return TwilioSmsPushOutput(self.sender, self.config.buttons_ttl_seconds)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("omni_twilio_sms", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            started = time.monotonic()
            try:
                inbound = InboundSms.parse(read_signed_form(request, self.settings))
            except Rejected as rejection:
                logger.warning("SMS webhook rejected (%d): %s", rejection.status, rejection.reason)
                return response.text(rejection.reason, status=rejection.status)
            if not inbound.body.strip() and not inbound.media:
                logger.info(
                    "SMS %s has no text and no media: nothing to answer", inbound.message_sid
                )
                return twiml_response(EMPTY_TWIML)
            token = request.headers.get("i-twilio-idempotency-token")
            if token is not None and (len(token) > 256 or _CONTROL_CHARS.search(token)):
                token = None
            answer = await self._answer(request, inbound, token, started, on_new_message)
            return twiml_response(answer)

        @bp.route("/status", methods=["POST"])
        async def status(request: Request) -> HTTPResponse:
            try:
                callback = StatusCallback.parse(read_signed_form(request, self.settings))
            except Rejected as rejection:
                logger.warning("SMS status rejected (%d): %s", rejection.status, rejection.reason)
                return response.text(rejection.reason, status=rejection.status)
            try:
                await self._record_status(callback)
            except StateUnavailable as error:
                logger.error("SMS status %s not recorded: %s", callback.message_sid, error)
                return response.text("state unavailable", status=503)
            return response.empty()

        return bp

    # -- messages -----------------------------------------------------------------------------

    async def _answer(
        self,
        request: Request,
        inbound: InboundSms,
        token: Optional[str],
        started: float,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
    ) -> str:
        """The TwiML for one delivery; failures of Redis or the turn give a texted apology."""
        try:
            claim = await self.ledger.claim(inbound.message_sid, token)
        except REDIS_FAILURES as error:
            logger.error(
                "SMS %s from %s: delivery ledger unavailable (%s); apologising",
                inbound.message_sid,
                inbound.address.masked(),
                type(error).__name__,
            )
            return twiml([SmsMessage(body=APOLOGY)])
        if not claim.first:
            logger.info("SMS %s is a duplicate delivery: not a new turn", inbound.message_sid)
            return claim.answer
        try:
            answer = await self._handle(request, inbound, started, on_new_message)
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error(
                "SMS %s from %s: conversation state unavailable (%s); apologising",
                inbound.message_sid,
                inbound.address.masked(),
                mask(str(error)) or type(error).__name__,
            )
            answer = twiml([SmsMessage(body=APOLOGY)])
        if answer is not None:
            await self._finish(inbound.message_sid, answer)
            return answer
        return EMPTY_TWIML

    async def _finish(self, message_sid: str, answer: str) -> None:
        try:
            await self.ledger.finish(message_sid, answer)
        except REDIS_FAILURES as error:
            logger.error("SMS %s: answer not stored (%s)", message_sid, type(error).__name__)

    async def _handle(
        self,
        request: Request,
        inbound: InboundSms,
        started: float,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
    ) -> Optional[str]:
        """The answer, or None when the turn outlived the budget and will reply by REST."""
        cid = await self.identity.resolve_conversation(inbound.address, channel="sms")
        keyword = inbound.opt_out_type or inbound.keyword
        profile = await self.identity.profile(cid)
        if keyword in STOP_KEYWORDS:
            await self.identity.set_sms_opt_out(cid, True)
            logger.info("%s opted out of SMS (conversation %s)", inbound.address.masked(), cid)
            return EMPTY_TWIML
        if keyword in START_KEYWORDS or (keyword in START_IF_OPTED_OUT and profile.sms_opted_out):
            await self.identity.set_sms_opt_out(cid, False)
            logger.info("%s opted back in to SMS (conversation %s)", inbound.address.masked(), cid)
            return EMPTY_TWIML
        if profile.sms_opted_out:
            logger.info(
                "SMS %s from opted-out %s: not answered (START re-subscribes)",
                inbound.message_sid,
                inbound.address.masked(),
            )
            return EMPTY_TWIML
        redis = redis_client()
        text = inbound.body.strip()
        metadata = inbound.metadata()
        if keyword in HELP_KEYWORDS:
            text = HELP_INTENT
        elif not text:
            text = PICTURE_INTENT
        else:
            chosen = match_button_reply(text, await offered_buttons(redis, cid))
            if chosen is not None:
                text = chosen.payload
                # What the chat history shows for this message (as for a clicked chat button),
                # rather than the payload the reply stands for.
                metadata["button_title"] = chosen.title
        output = TwilioSmsOutput()
        message = UserMessage(
            text,
            output,
            cid,
            input_channel=CHANNEL_NAME,
            message_id=inbound.message_sid,
            metadata=metadata,
        )
        turn = asyncio.create_task(self._run(request, on_new_message, message, output, cid))
        remaining = max(0.0, self.config.inline_budget_seconds - (time.monotonic() - started))
        done, _ = await asyncio.wait({turn}, timeout=remaining)
        if turn in done:
            rendering = turn.result()
            if all(not m.params for m in rendering.messages):
                return twiml(rendering.messages)
        else:
            logger.info(
                "SMS %s: turn still running after %.1f s; acknowledged, replying by REST",
                inbound.message_sid,
                self.config.inline_budget_seconds,
            )
        task = asyncio.create_task(self._reply_later(inbound, cid, turn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return None

    async def _run(
        self,
        request: Request,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        message: UserMessage,
        output: TwilioSmsOutput,
        cid: str,
    ) -> SmsRendering:
        """Run the turn and render it; a failed turn renders as the apology."""
        try:
            await run_turn(request.app.ctx.agent, on_new_message, message)
        except TurnFailed as failure:
            logger.error(
                "SMS %s (conversation %s): turn failed: %s; apologising",
                message.message_id,
                cid,
                failure.reason,
            )
            return SmsRendering(messages=(SmsMessage(body=APOLOGY),))
        except Exception:  # noqa: BLE001 - an SMS is answered, not dropped with a 500
            logger.exception(
                "SMS %s (conversation %s): turn raised; apologising", message.message_id, cid
            )
            return SmsRendering(messages=(SmsMessage(body=APOLOGY),))
        rendering = render_sms(output.turn.messages, self.config.max_message_length)
        await remember_buttons(
            redis_client(), cid, rendering.buttons, self.config.buttons_ttl_seconds
        )
        return rendering

    async def _reply_later(self, inbound: InboundSms, cid: str, turn: asyncio.Task) -> None:
        """Send a turn's replies by REST once it ends, then store the delivery as answered."""
        try:
            rendering = await turn
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error("SMS %s: turn state failed (%s)", inbound.message_sid, error)
            rendering = SmsRendering(messages=(SmsMessage(body=APOLOGY),))
        try:
            sids = await self.sender.send_rendered(
                cid, rendering.messages, to=inbound.reply_to, from_number=inbound.to or None
            )
            logger.info("SMS %s answered by REST: %s", inbound.message_sid, ", ".join(sids))
        except (SmsRefused, SmsSendFailed) as error:
            logger.error("SMS %s: REST reply not sent: %s", inbound.message_sid, error)
        await self._finish(inbound.message_sid, EMPTY_TWIML)

    # -- status callbacks ----------------------------------------------------------------------

    async def _record_status(self, callback: StatusCallback) -> None:
        if not callback.failed:
            logger.debug("SMS %s is %s", callback.message_sid, callback.status)
            return
        recipient = callback.recipient.masked() if callback.recipient else "an unknown number"
        cid = await self.identity.lookup(callback.recipient) if callback.recipient else None
        logger.warning(
            "SMS %s to %s %s (error %s)",
            callback.message_sid,
            recipient,
            callback.status,
            callback.error_code or "none",
        )
        if cid is None:
            logger.warning("SMS %s: no conversation for %s", callback.message_sid, recipient)
            return
        await self.identity.record_sms_failure(
            cid, sid=callback.message_sid, status=callback.status, error_code=callback.error_code
        )
        if callback.error_code == OPTED_OUT_ERROR:
            await self.identity.set_sms_opt_out(cid, True)
            logger.info("%s is unsubscribed at Twilio: opt-out recorded", recipient)
