"""Texting a conversation's customer through Twilio's Messages API: the one way any part of the
project sends an SMS outside a webhook answer (the Twilio connector's late replies, the action
server's "text me that", REST-triggered turns).

Never to a number that opted out (the contact profile in :mod:`omnichannel.identity`), never
twice for one request: Twilio's message creation is not idempotent, so a send whose outcome is
unknown (a timeout, a dropped connection, a 5xx) is reconciled with Twilio's message records
(:meth:`SmsSender.find_sent`) before it is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from omnichannel import metrics, tracing
from omnichannel.channels import TWILIO_SMS
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.masking import mask
from omnichannel.redis_client import StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import SMS_MAX_LENGTH, SmsMessage, render_sms
from omnichannel.settings import Settings, load_settings

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
    """The SMS must not be sent (the reason is safe to log and to tell the customer about)."""


class SmsOptedOut(SmsRefused):
    """The number texted STOP (or Twilio reports it unsubscribed, error 21610)."""


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
    """Sends SMS to a conversation's phone through Twilio's Messages API, never to a number that
    opted out, never twice for one request.

    Retry policy: Twilio's message creation is not idempotent and its REST API has no
    idempotency key for it. Requests that provably created nothing are retried with back-off:
    a TCP connection that could not be opened (nothing was sent), and HTTP 429 (Twilio refused
    before creating). A request that may have reached Twilio (a timeout, a dropped connection,
    a 5xx) is reconciled first: Twilio's records of messages to that number are read, and the
    send counts as done when one matches; only when none does is it sent again. When the
    records cannot be read either, :class:`SmsOutcomeUnknown` is raised (nothing is guessed).

    Usable anywhere with an event loop (the Rasa server, the action server, a script):
    ``await SmsSender.from_settings().send(conversation_id, "text")``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_message_length: int = SMS_MAX_LENGTH,
        identity: Optional[IdentityStore] = None,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        reconcile_delay_seconds: float = 1.0,
    ) -> None:
        require_twilio(settings)
        self.settings = settings
        self.max_message_length = max_message_length
        self.identity = identity or IdentityStore()
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        #: Wait before reading Twilio's records after an unknown outcome: a message created
        #: a moment ago may not be listed yet.
        self.reconcile_delay_seconds = reconcile_delay_seconds
        self.status_callback = settings.public_base_url + STATUS_PATH

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

    async def send(
        self, conversation_id: str, text: str, media_urls: Sequence[str] = ()
    ) -> List[str]:
        """Text ``text`` (rendered for SMS) and ``media_urls`` to the conversation's phone;
        returns the message SIDs. Raises SmsOptedOut, NoPhoneOnFile or SmsSendFailed."""
        messages = [BotMessage(text=text)] + [BotMessage(image=url) for url in media_urls]
        rendering = render_sms(messages, self.max_message_length)
        return await self.send_rendered(conversation_id, rendering.messages)

    async def send_rendered(
        self,
        conversation_id: str,
        messages: Sequence[SmsMessage],
        to: Optional[str] = None,
        from_number: Optional[str] = None,
        known: Sequence[Optional[str]] = (),
        since: Optional[float] = None,
    ) -> List[str]:
        """Send already rendered messages; ``to`` defaults to the phone on file. ``known`` holds
        the SIDs of parts already sent (by :meth:`find_sent`; None for a part to send), which
        are not sent again; ``since`` (epoch seconds) is when sending began, the window an
        unknown outcome is reconciled in (now by default)."""
        try:
            profile = await self.identity.profile(conversation_id)
        except StateUnavailable as error:
            raise SmsSendFailed(f"opt-out state unavailable: {error}") from error
        if profile.sms_opted_out:
            metrics.SMS_SENDS.labels(outcome=metrics.SMS_OPTED_OUT).inc()
            raise SmsOptedOut("the customer opted out of SMS (texted STOP)")
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
            try:
                sent.append(
                    await self._create(conversation_id, to, message, from_number, since, sent)
                )
            except SmsSendFailed as error:
                logger.error(
                    "SMS to %s for %s failed after %d sent: %s",
                    mask(to),
                    conversation_id,
                    len(sent),
                    error,
                )
                raise type(error)(str(error), sent) from error
        return sent

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
        sender = None if service else (from_number or self.settings.twilio_phone_number)
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
            else {"from_": from_number or self.settings.twilio_phone_number}
        )
        arguments: Dict[str, Any] = {
            "to": to,
            "status_callback": self.status_callback,
            **sender,
            **dict(message.params),
        }
        if message.body:
            arguments["body"] = message.body
        if message.media_urls:
            arguments["media_url"] = list(message.media_urls)
        attempt = 1
        while True:
            unknown = None
            try:
                sending = tracing.span("twilio.send", {"attempt": attempt}, kind=tracing.CLIENT)
                with sending:
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
                        f"Twilio refused the SMS: HTTP {error.status}, code {error.code}"
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
