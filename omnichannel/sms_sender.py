"""Messaging a conversation's customer through Twilio's Messages API, by SMS or WhatsApp: the
one way any part of the project sends a text outside a webhook answer (the Twilio connector's
late replies, the action server's "text me that", REST-triggered turns, agents' replies,
notifications).

:meth:`SmsSender.send_to_customer` is the entry point: it picks the channel (the one the
customer last wrote on, unless the caller names one), renders the messages for it, and on
WhatsApp respects the 24-hour window (:mod:`omnichannel.whatsapp_window`): inside it the
messages go as they are; outside it an approved template goes instead when the message names
one; else the messages go by SMS when the customer has texted us by SMS (or asked for the text
just now) and has not opted out; else they are held until the customer writes on WhatsApp again,
and the result says so. Nothing is sent only to fail with 63016.

Never to a number that opted out (STOP on SMS or WhatsApp opts the number out of both: the
contact profile in :mod:`omnichannel.identity`), never twice for one request: Twilio's message
creation is not idempotent, so a send whose outcome is unknown (a timeout, a dropped
connection, a 5xx) is reconciled with Twilio's message records (:meth:`SmsSender.find_sent`)
before it is sent again. Each message sent is recorded in the conversation's receipts
(:mod:`omnichannel.receipts`), which Twilio's status callbacks then move on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from omnichannel import metrics
from omnichannel.channels import (
    MESSAGING_KINDS,
    SMS,
    TWILIO_SMS,
    WHATSAPP,
    kind_of_address,
    messaging_address,
)
from omnichannel.errors import ConfigError
from omnichannel.identity import ContactProfile, IdentityStore
from omnichannel.masking import mask
from omnichannel.receipts import Receipts
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.rendering.messages import BotMessage, Button
from omnichannel.rendering.sms import SMS_MAX_LENGTH, SmsMessage, render_sms
from omnichannel.rendering.whatsapp import (
    SESSION_CONTENT,
    render_whatsapp,
    session_content,
    whatsapp_text,
)
from omnichannel.settings import Settings, load_settings
from omnichannel.twilio_content import (
    ContentApi,
    ContentApiError,
    SessionContents,
    template_catalog,
)
from omnichannel.whatsapp_templates import TemplateRef, match_variables
from omnichannel.whatsapp_window import WhatsAppState

logger = logging.getLogger(__name__)

#: Where Twilio reports each sent message's delivery (the Twilio connector's status route).
STATUS_PATH = f"/webhooks/{TWILIO_SMS}/status"
#: Twilio's error code for a number that is unsubscribed (texted STOP).
OPTED_OUT_ERROR = "21610"
#: Twilio's clock and ours may differ: a record created this much before the send began still
#: counts as the send's.
CLOCK_SKEW_SECONDS = 5.0
#: How many of the newest messages to a number a reconcile reads (Twilio lists newest first).
RECONCILE_LIMIT = 100


def require_twilio(settings: Settings) -> None:
    """Stop start-up unless the Twilio account and a sender (number or service) are set."""
    settings.require("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    if not (settings.twilio_phone_number or settings.twilio_messaging_service_sid):
        raise ConfigError(
            "missing required environment variable: TWILIO_PHONE_NUMBER or "
            "TWILIO_MESSAGING_SERVICE_SID (see .env.example)"
        )


class SmsRefused(Exception):
    """The message must not be sent (the reason is safe to log and to tell the customer
    about)."""


class SmsOptedOut(SmsRefused):
    """The number texted STOP, by SMS or WhatsApp (or Twilio reports it unsubscribed, error
    21610)."""


class NoPhoneOnFile(SmsRefused):
    """The conversation has no phone number to text."""


class SmsSendFailed(Exception):
    """Twilio could not be asked to send (or said no); ``sent`` lists SIDs sent before it."""

    def __init__(self, reason: str, sent: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.sent = list(sent)


class TwilioUnreachable(SmsSendFailed):
    """No connection to Twilio's API could be opened (after retries): nothing was sent, and a
    later attempt may succeed."""


class SmsOutcomeUnknown(SmsSendFailed):
    """A send that may have reached Twilio, whose records could not be read to tell: it is
    neither sent again nor known to have failed. The SMS outbox keeps such a reply and
    reconciles it again later."""


@dataclass(frozen=True)
class Delivery:
    """What :meth:`SmsSender.send_to_customer` did.

    ``channel`` is where the messages went (``sms`` or ``whatsapp``; for held messages the
    channel they wait for), ``route`` how (the values of ``metrics.OUTBOUND_ROUTES``: ``sms``,
    ``session``, ``template``, ``sms_fallback``, ``held``), ``sids`` the Twilio message SIDs (none
    when held), ``reason`` why a WhatsApp message did not go in the window (None when it did),
    and ``buttons`` the options offered by number or tap (what the customer's answer means).
    """

    channel: str
    route: str
    sids: Tuple[str, ...] = ()
    reason: Optional[str] = None
    buttons: Tuple[Button, ...] = ()

    @property
    def held(self) -> bool:
        return self.route == metrics.ROUTE_HELD


@dataclass(frozen=True)
class Plan:
    """How a message to a customer will go (:meth:`SmsSender.plan`): ``channel`` it goes on,
    ``route`` (as in :class:`Delivery`), ``wanted`` the channel it was meant for, the address
    ``to`` and our ``sender`` (None: the default), the rendered ``messages`` and the ``buttons``
    they offer, and the ``reason`` it does not go in WhatsApp's window."""

    channel: str
    route: str
    wanted: str
    to: Optional[str]
    sender: Optional[str]
    messages: Tuple[SmsMessage, ...]
    buttons: Tuple[Button, ...]
    reason: Optional[str] = None

    def sent(self, sids: Sequence[str]) -> Delivery:
        """The delivery of this plan once its messages went (counted in the routes metric)."""
        metrics.OUTBOUND_ROUTES.labels(channel=self.wanted, route=self.route).inc()
        return Delivery(self.channel, self.route, tuple(sids), self.reason, self.buttons)


def preferred_channel(profile: ContactProfile) -> str:
    """The messaging channel the customer last wrote on: WhatsApp when they wrote there more
    recently than by SMS, else SMS (also for a customer who only called or chatted)."""
    whatsapp = profile.channels.get(WHATSAPP)
    sms = profile.channels.get(SMS)
    if whatsapp is not None and (sms is None or whatsapp >= sms):
        return WHATSAPP
    return SMS


_TEMPLATE_VARIABLE = re.compile(r"\{\{(\d+)\}\}")


def filled_template(body: str, variables: Mapping[str, str]) -> str:
    """A template's body as the customer reads it (its ``{{n}}`` replaced)."""
    return _TEMPLATE_VARIABLE.sub(lambda m: str(variables.get(m.group(1), m.group(0))), body)


class _BoundedAsyncHttpClient(AsyncTwilioHttpClient):
    """twilio-python's async client, with its timeout applied to every request (8.x passes only
    a per-call timeout to aiohttp, and the Messages API never sets one)."""

    async def request(
        self,
        method: str,
        url: str,
        params: Optional[Dict[str, object]] = None,
        data: Optional[Dict[str, object]] = None,
        headers: Optional[Dict[str, str]] = None,
        auth: Optional[Tuple[str, str]] = None,
        timeout: Optional[float] = None,
        allow_redirects: bool = False,
    ) -> Any:
        return await super().request(
            method, url, params, data, headers, auth, timeout or self.timeout, allow_redirects
        )


#: Twilio clients per event loop (aiohttp sessions belong to the loop that made them).
_ClientsOfLoop = Dict[Tuple[Any, ...], Client]
_twilio_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientsOfLoop] = (
    weakref.WeakKeyDictionary()
)


class SmsSender:
    """Sends messages to a conversation's customer through Twilio's Messages API, by SMS or
    WhatsApp, never to a number that opted out, never twice for one request.

    :meth:`send_to_customer` decides the channel and the route (window, template, SMS
    fallback, held); :meth:`send_rendered` sends already rendered parts to one address.

    Retry policy: Twilio's message creation is not idempotent and its REST API has no
    idempotency key for it. Requests that provably created nothing are retried with back-off:
    a TCP connection that could not be opened (nothing was sent), and HTTP 429 (Twilio refused
    before creating). A request that may have reached Twilio (a timeout, a dropped connection,
    a 5xx) is reconciled first: Twilio's records of messages to that number are read, and the
    send counts as done when one matches; only when none does is it sent again. When the
    records cannot be read either, :class:`SmsOutcomeUnknown` is raised (nothing is guessed).

    Usable anywhere with an event loop (the Rasa server, the action server, a script):
    ``await SmsSender.from_settings().send_to_customer(conversation_id, [BotMessage(text=…)])``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_message_length: int = SMS_MAX_LENGTH,
        identity: Optional[IdentityStore] = None,
        whatsapp: Optional[WhatsAppState] = None,
        receipts: Optional[Receipts] = None,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        reconcile_delay_seconds: float = 1.0,
    ) -> None:
        require_twilio(settings)
        self.settings = settings
        self.max_message_length = max_message_length
        self.identity = identity or IdentityStore()
        self.whatsapp = whatsapp or WhatsAppState(self.identity.given)
        self.receipts = receipts or Receipts(self.identity.given)
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        #: Wait before reading Twilio's records after an unknown outcome: a message created
        #: a moment ago may not be listed yet.
        self.reconcile_delay_seconds = reconcile_delay_seconds
        self.status_callback = settings.public_base_url + STATUS_PATH
        self._contents: Optional[SessionContents] = None

    @classmethod
    def from_settings(
        cls, settings: Optional[Settings] = None, max_message_length: int = SMS_MAX_LENGTH
    ) -> SmsSender:
        return cls(settings or load_settings(), max_message_length=max_message_length)

    def _client(self) -> Client:
        loop = asyncio.get_running_loop()
        per_loop = _twilio_clients.setdefault(loop, {})
        key = (
            self.settings.twilio_account_sid,
            self.settings.twilio_auth_token,
            self.settings.twilio_api_base_url,
            self.timeout,
        )
        client = per_loop.get(key)
        if client is None:
            client = Client(
                self.settings.twilio_account_sid,
                self.settings.twilio_auth_token,
                http_client=_BoundedAsyncHttpClient(timeout=self.timeout),
            )
            if self.settings.twilio_api_base_url:
                client.api.base_url = self.settings.twilio_api_base_url.rstrip("/")
            per_loop[key] = client
        return client

    @property
    def contents(self) -> SessionContents:
        if self._contents is None:
            self._contents = SessionContents(ContentApi(self.settings, self.timeout))
        return self._contents

    async def send(
        self, conversation_id: str, text: str, media_urls: Sequence[str] = ()
    ) -> List[str]:
        """Text ``text`` and ``media_urls`` to the conversation's phone by SMS; returns the
        message SIDs. Raises SmsOptedOut, NoPhoneOnFile or SmsSendFailed."""
        messages = [BotMessage(text=text)] + [BotMessage(image=url) for url in media_urls]
        delivery = await self.send_to_customer(conversation_id, messages, channel=SMS)
        return list(delivery.sids)

    async def send_to_customer(
        self,
        conversation_id: str,
        messages: Sequence[BotMessage],
        *,
        channel: Optional[str] = None,
        template: Optional[TemplateRef] = None,
        requested: bool = False,
        reply_to: Optional[str] = None,
    ) -> Delivery:
        """Sends ``messages`` to the conversation's customer on a messaging channel.

        ``channel``: ``"sms"``, ``"whatsapp"``, or None for the one the customer last wrote on
        (:func:`preferred_channel`; SMS when WhatsApp reported the number unreachable).
        ``template``: the approved WhatsApp template that stands for the messages outside the
        24-hour window. ``requested``: the customer asked for this message just now ("text me
        that"), which is consent to an SMS when WhatsApp cannot take it, even if they never
        texted us by SMS. ``reply_to``: the inbound MessageSid these answer, for the receipts.

        Returns how it went (:class:`Delivery`; a held message is a result, not an error: it is
        sent when the customer next writes on WhatsApp). Raises SmsOptedOut, NoPhoneOnFile,
        SmsSendFailed (logged; ``sent`` lists SIDs that went before it).
        """
        plan = await self.plan(
            conversation_id, messages, channel=channel, template=template, requested=requested
        )
        if plan.route == metrics.ROUTE_HELD:
            return await self.hold(conversation_id, messages, str(plan.reason))
        sids = await self.send_rendered(
            conversation_id, plan.messages, to=plan.to, from_number=plan.sender, reply_to=reply_to
        )
        return plan.sent(sids)

    async def plan(
        self,
        conversation_id: str,
        messages: Sequence[BotMessage],
        *,
        channel: Optional[str] = None,
        template: Optional[TemplateRef] = None,
        requested: bool = False,
    ) -> Plan:
        """How :meth:`send_to_customer` would send ``messages`` now, rendered, without sending
        anything (the Twilio connector records a plan in its outbox before sending it)."""
        profile = await self._profile(conversation_id)
        if not profile.phone:
            raise NoPhoneOnFile("no phone number on file for this conversation")
        if channel is not None and channel not in MESSAGING_KINDS:
            raise ValueError(f"{channel!r} is not a messaging channel ({MESSAGING_KINDS})")
        unreachable = await self._state(self.whatsapp.unreachable(conversation_id))
        if channel is None:
            channel = preferred_channel(profile)
            if channel == WHATSAPP and unreachable:
                channel = SMS
        if channel == SMS:
            return self._sms_plan(profile.phone, messages, metrics.ROUTE_SMS, None, SMS)
        window = await self._state(self.whatsapp.window(conversation_id))
        if unreachable:
            reason = f"the number cannot get our WhatsApp messages (error {unreachable})"
        elif window is not None and window.is_open():
            rendering = render_whatsapp(messages)
            return Plan(
                channel=WHATSAPP,
                route=metrics.ROUTE_SESSION,
                wanted=WHATSAPP,
                to=messaging_address(WHATSAPP, profile.phone),
                sender=window.sender,
                messages=rendering.messages,
                buttons=rendering.buttons,
            )
        else:
            reason = "outside WhatsApp's 24-hour window"
            by_template = await self._template_plan(profile.phone, template, messages, reason)
            if by_template is not None:
                return by_template
        if SMS in profile.channels or requested:
            logger.info("WhatsApp message for %s goes by SMS: %s", conversation_id, reason)
            return self._sms_plan(
                profile.phone, messages, metrics.ROUTE_SMS_FALLBACK, reason, WHATSAPP
            )
        return Plan(WHATSAPP, metrics.ROUTE_HELD, WHATSAPP, None, None, (), (), reason)

    def _sms_plan(
        self,
        phone: str,
        messages: Sequence[BotMessage],
        route: str,
        reason: Optional[str],
        wanted: str,
    ) -> Plan:
        rendering = render_sms(messages, self.max_message_length)
        return Plan(SMS, route, wanted, phone, None, rendering.messages, rendering.buttons, reason)

    async def _template_plan(
        self,
        phone: str,
        template: Optional[TemplateRef],
        messages: Sequence[BotMessage],
        reason: str,
    ) -> Optional[Plan]:
        """The approved ``template`` as the message to send; None when there is none, or when
        its variables were not given and the messages do not read as its wording."""
        if template is None:
            return None
        try:
            approved = await template_catalog(self.settings).approved(template.name)
        except ContentApiError as error:
            logger.error(
                "WhatsApp templates unreadable (%s): %s not sent as one", error, template.name
            )
            return None
        if approved is None:
            logger.warning("WhatsApp template %r is not approved (yet): not used", template.name)
            return None
        if template.variables is not None:
            variables = {str(k): str(v) for k, v in template.variables.items()}
        else:
            text = "\n\n".join(whatsapp_text(m.text) for m in messages if m.text)
            found = match_variables(approved.body, text)
            if found is None:
                logger.warning(
                    "WhatsApp template %r does not match the message's wording: not used",
                    template.name,
                )
                return None
            variables = found
        message = SmsMessage(
            body=filled_template(approved.body, variables),
            params={
                "content_sid": approved.sid,
                **({"content_variables": json.dumps(variables)} if variables else {}),
            },
        )
        return Plan(
            channel=WHATSAPP,
            route=metrics.ROUTE_TEMPLATE,
            wanted=WHATSAPP,
            to=messaging_address(WHATSAPP, phone),
            sender=None,
            messages=(message,),
            buttons=(),
            reason=f"{reason}: sent as template {template.name}",
        )

    async def hold(
        self, conversation_id: str, messages: Sequence[BotMessage], reason: str
    ) -> Delivery:
        """Keeps WhatsApp messages that cannot go now until the customer writes there again."""
        held = await self._state(
            self.whatsapp.hold(conversation_id, [m.as_dict() for m in messages], reason)
        )
        metrics.OUTBOUND_ROUTES.labels(channel=WHATSAPP, route=metrics.ROUTE_HELD).inc()
        logger.warning(
            "WhatsApp message for %s held (%d waiting): %s; no approved template fits and the "
            "customer has no SMS with us. It goes when they next write on WhatsApp.",
            conversation_id,
            held,
            reason,
        )
        return Delivery(WHATSAPP, metrics.ROUTE_HELD, (), reason)

    async def _profile(self, conversation_id: str) -> ContactProfile:
        try:
            profile = await self.identity.profile(conversation_id)
        except StateUnavailable as error:
            raise SmsSendFailed(f"opt-out state unavailable: {error}") from error
        if profile.sms_opted_out:
            metrics.SMS_SENDS.labels(outcome=metrics.SMS_OPTED_OUT).inc()
            raise SmsOptedOut("the customer opted out of our texts (STOP)")
        return profile

    @staticmethod
    async def _state(pending: Any) -> Any:
        """A WhatsApp state read or write; Redis failing is a failed send, said loudly."""
        try:
            return await pending
        except REDIS_FAILURES as error:
            raise SmsSendFailed(f"WhatsApp state unavailable ({type(error).__name__})") from None

    async def send_rendered(
        self,
        conversation_id: str,
        messages: Sequence[SmsMessage],
        to: Optional[str] = None,
        from_number: Optional[str] = None,
        known: Sequence[Optional[str]] = (),
        since: Optional[float] = None,
        reply_to: Optional[str] = None,
    ) -> List[str]:
        """Send already rendered messages to one address (``+1…`` by SMS, ``whatsapp:+1…``);
        ``to`` defaults to the phone on file by SMS. ``known`` holds the SIDs of parts already
        sent (by :meth:`find_sent`; None for a part to send), which are not sent again;
        ``since`` (epoch seconds) is when sending began, the window an unknown outcome is
        reconciled in (now by default); ``reply_to`` the inbound MessageSid they answer.
        No window check here: :meth:`send_to_customer` decides what may go to WhatsApp."""
        profile = await self._profile(conversation_id)
        to = to or profile.phone
        if not to:
            raise NoPhoneOnFile("no phone number on file for this conversation")
        since = time.time() if since is None else since
        sent: List[str] = []
        for index, message in enumerate(messages):
            sid = known[index] if index < len(known) else None
            if sid:
                sent.append(sid)
                continue
            message = await self._resolved(message)
            try:
                sid = await self._create(conversation_id, to, message, from_number, since, sent)
            except SmsSendFailed as error:
                logger.error(
                    "%s to %s for %s failed after %d sent: %s",
                    _label(to),
                    mask(to),
                    conversation_id,
                    len(sent),
                    error,
                )
                raise type(error)(str(error), sent) from error
            sent.append(sid)
            await self._receipt(conversation_id, sid, to, message, reply_to)
        return sent

    async def _resolved(self, message: SmsMessage) -> SmsMessage:
        """A rendered WhatsApp message with tappable options, as it is sent: by the SID of its
        Content resource (created on first use), or as its numbered text when the Content API
        cannot give one."""
        content = session_content(message)
        if content is None:
            return message
        params = {k: v for k, v in message.params.items() if k != SESSION_CONTENT}
        try:
            sid = await self.contents.sid_for(content)
        except (ContentApiError, *REDIS_FAILURES) as error:
            logger.warning(
                "WhatsApp options sent as numbered text: no Content resource for them (%s)",
                error,
            )
            return SmsMessage(
                body=str(content["fallback"]), media_urls=message.media_urls, params=params
            )
        return SmsMessage(
            body=message.body, media_urls=message.media_urls, params={**params, "content_sid": sid}
        )

    async def _receipt(
        self,
        conversation_id: str,
        sid: str,
        to: str,
        message: SmsMessage,
        reply_to: Optional[str],
    ) -> None:
        try:
            await self.receipts.record(
                conversation_id,
                sid,
                channel=kind_of_address(to),
                reply_to=reply_to,
                body=message.body,
                media=message.media_urls,
            )
        except REDIS_FAILURES as error:
            # The message went; only its delivery report will have nothing to update.
            logger.error("receipt of %s not recorded: %s", sid, type(error).__name__)

    async def find_sent(
        self,
        to: str,
        from_number: Optional[str],
        messages: Sequence[SmsMessage],
        since: float,
        exclude: Sequence[str] = (),
    ) -> List[Optional[str]]:
        """For each of ``messages``, the SID of a message Twilio's records hold to ``to``
        (from our number or messaging service) with the same body and media count, created
        since ``since`` (less the clock skew allowed); None for a part not found. Each record
        answers one part at most (two parts with one body need two records), and ``exclude``
        lists SIDs already accounted for. Raises SmsOutcomeUnknown when Twilio cannot be read.
        """
        service = self.settings.twilio_messaging_service_sid
        sender = None if service else self._from(to, from_number)
        after = datetime.fromtimestamp(since - CLOCK_SKEW_SECONDS, timezone.utc)
        try:
            records = await self._client().messages.list_async(
                to=to, **({"from_": sender} if sender else {}), limit=RECONCILE_LIMIT
            )
        except (TwilioException, aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise SmsOutcomeUnknown(
                f"Twilio's message records could not be read ({type(error).__name__})"
            ) from None
        used = set(exclude)
        found: List[Optional[str]] = []
        for message in messages:
            match = None
            # Oldest first, so the parts of one reply pair with their records in order.
            for record in reversed(records):
                if (
                    record.sid not in used
                    and record.date_created is not None
                    and record.date_created >= after
                    and (not service or record.messaging_service_sid == service)
                    and (record.body or "") == message.body
                    and int(record.num_media or 0) == len(message.media_urls)
                ):
                    match = record.sid
                    used.add(match)
                    break
            found.append(match)
        return found

    async def _create(
        self,
        conversation_id: str,
        to: str,
        message: SmsMessage,
        from_number: Optional[str],
        since: float,
        sent: Sequence[str],
    ) -> str:
        sender: Dict[str, Any] = (
            {"messaging_service_sid": self.settings.twilio_messaging_service_sid}
            if self.settings.twilio_messaging_service_sid
            else {"from_": self._from(to, from_number)}
        )
        arguments: Dict[str, Any] = {
            "to": to,
            "status_callback": self.status_callback,
            **sender,
            **dict(message.params),
        }
        # A Content resource carries its own text and media: Twilio wants neither beside it.
        if message.body and "content_sid" not in message.params:
            arguments["body"] = message.body
        if message.media_urls and "content_sid" not in message.params:
            arguments["media_url"] = list(message.media_urls)
        attempt = 1
        while True:
            unknown = None
            try:
                created = await self._client().messages.create_async(**arguments)
            except TwilioRestException as error:
                if str(error.code) == OPTED_OUT_ERROR:
                    metrics.SMS_SENDS.labels(outcome=metrics.SMS_OPTED_OUT).inc()
                    await self._mark_opted_out(conversation_id)
                    raise SmsOptedOut("Twilio reports the number unsubscribed (21610)") from None
                if error.status >= 500:
                    unknown = f"HTTP {error.status}"
                elif error.status != 429 or attempt >= self.attempts:
                    metrics.SMS_SENDS.labels(outcome=metrics.SMS_FAILED).inc()
                    raise SmsSendFailed(
                        f"Twilio refused the {_label(to)}: HTTP {error.status}, code {error.code}"
                    ) from None
                reason = "HTTP 429 (rate limited; nothing was created)"
            except aiohttp.ClientConnectorError as error:
                if attempt >= self.attempts:
                    metrics.SMS_SENDS.labels(outcome=metrics.SMS_FAILED).inc()
                    raise TwilioUnreachable(
                        f"Twilio API unreachable after {attempt} attempts: {error.strerror}"
                    ) from None
                reason = f"connection not established ({error.strerror}; nothing was sent)"
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                unknown = type(error).__name__
            else:
                metrics.SMS_SENDS.labels(outcome=metrics.SMS_SENT).inc()
                if kind_of_address(to) == WHATSAPP:
                    logger.info(
                        "WhatsApp %s sent to %s (%d characters%s, %d media) for %s",
                        created.sid,
                        mask(to),
                        len(message.body),
                        ", content " + str(message.params["content_sid"])
                        if "content_sid" in message.params
                        else "",
                        len(message.media_urls),
                        conversation_id,
                    )
                    return str(created.sid)
                logger.info(
                    "SMS %s sent to %s (%d segment(s), %s, %d media) for %s",
                    created.sid,
                    mask(to),
                    message.segments.segments,
                    message.segments.encoding,
                    len(message.media_urls),
                    conversation_id,
                )
                return str(created.sid)
            if unknown is not None:
                found = await self._reconcile(to, message, from_number, since, sent, unknown)
                if found is not None:
                    return found
                if attempt >= self.attempts:
                    metrics.SMS_SENDS.labels(outcome=metrics.SMS_FAILED).inc()
                    raise SmsSendFailed(
                        f"SMS not created after {attempt} attempts (last: {unknown}; "
                        "Twilio's records show none of them)"
                    )
                reason = f"{unknown}, and Twilio's records show no such message"
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "SMS to %s: attempt %d failed, %s; retrying in %.1f s",
                mask(to),
                attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1

    def _from(self, to: str, from_number: Optional[str]) -> Optional[str]:
        """Our sender for ``to``: the one given (the number the customer wrote to), else our
        WhatsApp sender for a WhatsApp address, else our phone number."""
        if from_number:
            return from_number
        if kind_of_address(to) == WHATSAPP:
            return self.settings.whatsapp_sender
        return self.settings.twilio_phone_number

    async def _reconcile(
        self,
        to: str,
        message: SmsMessage,
        from_number: Optional[str],
        since: float,
        sent: Sequence[str],
        unknown: str,
    ) -> Optional[str]:
        """After a send with an unknown outcome: the SID Twilio's records show for it, or None
        when they show none (it may be sent again). Raises SmsOutcomeUnknown."""
        logger.warning(
            "SMS to %s: outcome unknown (%s); reconciling with Twilio's records", mask(to), unknown
        )
        await asyncio.sleep(self.reconcile_delay_seconds)
        [found] = await self.find_sent(to, from_number, [message], since, exclude=sent)
        if found is None:
            metrics.SMS_SENDS.labels(outcome=metrics.SMS_RECONCILED_MISSING).inc()
            return None
        metrics.SMS_SENDS.labels(outcome=metrics.SMS_RECONCILED_SENT).inc()
        logger.info("SMS %s to %s: found in Twilio's records, not sent again", found, mask(to))
        return found

    async def _mark_opted_out(self, conversation_id: str) -> None:
        try:
            await self.identity.set_sms_opt_out(conversation_id, True)
        except StateUnavailable as error:
            logger.error("could not record the opt-out of %s: %s", conversation_id, error)


def _label(address: str) -> str:
    """How logs name a message to ``address``."""
    return "WhatsApp message" if kind_of_address(address) == WHATSAPP else "SMS"
