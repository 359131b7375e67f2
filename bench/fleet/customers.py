"""Simulated customers of a fleet, on all three channels, through its load balancer, with the
real clients and the real senders' retry habits; and the checks of what became of every message.

- **SMS**: a form POSTed to ``/webhooks/twilio_sms/webhook``, signed by twilio-python's
  ``RequestValidator`` over the public (load balancer) URL. Like Twilio, a delivery that fails
  (no connection, a timeout, a 5xx) is retried with the same ``MessageSid`` and
  ``I-Twilio-Idempotency-Token``. The reply is the inline TwiML or, after an empty TwiML, what
  the fake Twilio receives for the number.
- **Voice**: the ``openai`` SDK streams ``POST /webhooks/vapi/chat/completions`` with the call's
  whole history, as VAPI does (``testkit.vapi_call.VapiCall``); on a failed or dropped stream it
  re-POSTs the same messages.
- **Chat**: a WebSocket speaking the widget protocol (auth frame, message frames with client
  ids). Like the widget, a message not acknowledged (or refused with ``retry``) is resent with
  the same id after reconnecting (close 1012 or a dropped connection); an acknowledged one is
  never resent, its reply is awaited on whichever socket is open (the first page of history a
  new socket gets included).

- **The shop's backend**: notifications (``POST /webhooks/notifications/send``) to customers who
  texted, one each, retried with the same idempotency key on a failure, a 5xx or a 409.
- **Callbacks**: a customer texts "please call me back now" (an SMS like any other); each one
  promised a call must get exactly one, placed through the fake VAPI API by whichever replica
  claims it, through kills and restarts.

Every customer waits for the reply to a message before the next one, so replies are countable
per message. :class:`Traffic` records each message (:class:`Sent`); :func:`check` reads the
conversations' event logs in Redis and what the fake Twilio received, and returns a
:class:`Report` with the figures (accepted, lost, duplicated, unanswered, SMS sent twice, work
left running, reply-time percentiles per channel outside and during disruptions).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import httpx
import jwt
import openai
import websockets

from bench.fleet.local_fleet import Fleet
from connectors.twilio_sms.turns import APOLOGY as SMS_APOLOGY
from connectors.vapi.voice_turn import APOLOGY as VOICE_APOLOGY
from testkit.twilio_webhook import WEBHOOK_PATH, signed_headers, sms_form
from testkit.vapi_call import VapiCall

SMS, VOICE, CHAT = "sms", "voice", "chat"
CHANNELS = (SMS, VOICE, CHAT)

#: What customers say: answered by the model or the actions without ending the conversation
#: (no goodbye, hand-off or "text me that", which would end a call or text another channel).
#: The last three are beyond the model (nlu_fallback): the LLM fallback answers them, as slowly
#: as the fleet's fake LLM is told to be, so kills and restarts find turns in flight.
UTTERANCES = (
    "hi",
    "what is your refund policy",
    "are you a bot",
    "where is my order",
    "thanks",
    "hello there",
    "can you help me",
    "how do refunds work",
    "do penguins have knees",
    "which planets have rings",
    "recommend a good novel",
)

#: The utterances only the LLM fallback answers. A script never has three in a row: the
#: fallback hands a customer it answered that often to a person (actions/llm_fallback.py), and
#: a held conversation is not answered by the bot.
BEYOND_THE_MODEL = UTTERANCES[-3:]

CHAT_PATH = "/webhooks/webchat/ws"

#: How long a customer waits for a reply before counting the message unanswered.
REPLY_TIMEOUT = 60.0
#: Twilio's webhook deadline.
SMS_TIMEOUT = 15.0
#: Deliveries of one SMS (the first and the retries), re-POSTs of one voice turn, and sends of
#: one chat message before the customer gives up on it (not accepted).
MAX_ATTEMPTS = 8

#: The channels' explicit apologies (a chat refuses with an error frame instead).
APOLOGIES = {SMS: SMS_APOLOGY, VOICE: VOICE_APOLOGY}


#: A customer asking to be called back arrives every this many seconds.
CALLBACK_EVERY_SECONDS = (2.0, 4.0)
CALLBACK_REQUEST = "please call me back now"
#: The reply that promises the call (domain.yml's utter_callback_now).
CALLBACK_PROMISE = "We'll call you in a moment"

#: The shop's backend: one notification (to a customer who texted) every this many seconds.
NOTIFY_EVERY_SECONDS = (0.5, 1.5)
NOTIFY_PATH = "/webhooks/notifications/send"
#: The notification the backend sends (domain.yml, sendable) and how its SMS reads.
NOTIFICATION_RESPONSE = "utter_order_shipped"
NOTIFICATION_SMS = (
    "Acme Shop: your order {} has shipped. Reply here with any questions, or STOP to opt out."
)


def _backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): 0.5 s doubling to 8 s, with jitter."""
    return min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


#: Area codes whose 555 numbers libphonenumber takes as valid: 200,000 fresh customer numbers.
AREA_CODES = (
    "415", "212", "310", "617", "312", "206", "512", "303", "404", "702",
    "213", "646", "718", "305", "503", "919", "614", "480", "602", "720",
)  # fmt: skip


def _fresh_phone() -> str:
    """A valid US number in a 555 exchange, random enough that a run's customers do not meet."""
    return f"+1{random.choice(AREA_CODES)}555{secrets.randbelow(10000):04d}"


@dataclass
class Sent:
    """One customer message and what became of it, as the customer saw it."""

    channel: str
    #: The phone number (SMS, voice) or user id (chat) of the customer.
    customer: str
    #: What identifies it in the event log: the MessageSid, the chat client id, or the call id
    #: (a voice turn is its call's user message with this text).
    key: str
    text: str
    started: float = field(default_factory=time.time)
    attempts: int = 0
    accepted: bool = False
    replied_at: Optional[float] = None
    reply: str = ""
    #: Inline TwiML for SMS (an empty one means the reply comes by REST).
    inline: bool = False
    errors: List[str] = field(default_factory=list)
    conversation_id: Optional[str] = None

    @property
    def reply_seconds(self) -> Optional[float]:
        return None if self.replied_at is None else self.replied_at - self.started

    @property
    def apology(self) -> bool:
        apology = APOLOGIES.get(self.channel)
        return apology is not None and apology in self.reply


@dataclass
class Notified:
    """One notification the shop's backend sent, as it saw it: retried with the same
    idempotency key until answered."""

    number: str
    key: str
    order: str
    started: float = field(default_factory=time.time)
    attempts: int = 0
    accepted: bool = False
    status: str = ""
    errors: List[str] = field(default_factory=list)


@dataclass
class Traffic:
    """Customers on every channel against ``fleet``, until :meth:`stop`; see the module doc."""

    fleet: Fleet
    per_channel: int = 4
    messages_per_customer: int = 6
    #: A customer's pause between reading a reply and sending the next message (seconds).
    think: Tuple[float, float] = (0.3, 1.2)
    sent: List[Sent] = field(default_factory=list)
    #: (start, end, what) of each disruption (kill, restart, failover), wall-clock seconds.
    disruptions: List[Tuple[float, Optional[float], str]] = field(default_factory=list)
    #: Kinds of the durable work items the SIGKILLed replicas held when killed.
    killed_holding: List[str] = field(default_factory=list)
    #: The shop's backend sends notifications to customers who texted (0: it does not).
    notify: bool = True
    notifications: List[Notified] = field(default_factory=list)
    #: Customers ask to be called back now and then (0: they do not).
    callbacks: bool = True
    #: Their requests (SMS messages), as they saw them.
    callback_requests: List[Sent] = field(default_factory=list)
    #: Numbers whose text was accepted and that got no notification yet.
    _texters: List[str] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def env(self) -> Dict[str, str]:
        return self.fleet.env

    def stop(self) -> None:
        """Customers finish the message they are on, then leave (calls hang up)."""
        self._stopping.set()

    def disruption(self, what: str) -> int:
        self.disruptions.append((time.time(), None, what))
        return len(self.disruptions) - 1

    def disruption_over(self, index: int) -> None:
        start, _, what = self.disruptions[index]
        self.disruptions[index] = (start, time.time(), what)

    async def run(self) -> None:
        """Every customer slot keeps a customer talking (a new one once one is done) until
        :meth:`stop`."""
        slots = [
            self._slot(kind)
            for kind in (self._sms, self._voice, self._chat)
            for _ in range(self.per_channel)
        ]
        if self.notify:
            slots.append(self._slot(self._shop))
        if self.callbacks:
            slots.append(self._slot(self._call_me_back))
        await asyncio.gather(*slots)

    async def _slot(self, customer) -> None:
        # Spread the first messages over a second, as customers do not arrive in lockstep.
        await asyncio.sleep(random.uniform(0, 1))
        while not self._stopping.is_set():
            await customer()

    def _script(self) -> List[str]:
        while True:
            script = random.sample(UTTERANCES, min(self.messages_per_customer, len(UTTERANCES)))
            if not any(
                all(text in BEYOND_THE_MODEL for text in script[i : i + 3])
                for i in range(len(script) - 2)
            ):
                return script

    async def _think(self) -> None:
        await asyncio.sleep(random.uniform(*self.think))

    def _record(self, channel: str, customer: str, key: str, text: str) -> Sent:
        item = Sent(channel, customer, key, text)
        self.sent.append(item)
        return item

    # -- SMS --------------------------------------------------------------------------------------

    async def _sms(self) -> None:
        number = _fresh_phone()
        async with httpx.AsyncClient(timeout=SMS_TIMEOUT) as client:
            for text in self._script():
                if self._stopping.is_set():
                    return
                await self._text(client, number, text)
                await self._think()

    async def _text(self, client: httpx.AsyncClient, number: str, text: str) -> None:
        form = sms_form(self.env, number, text)
        item = self._record(SMS, number, form["MessageSid"], text)
        headers = {
            **signed_headers(self.env, form),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        }
        assert self.fleet.twilio is not None
        before = len(self.fleet.twilio.messages_to(number))
        answer: Optional[httpx.Response] = None
        while item.attempts < MAX_ATTEMPTS:
            item.attempts += 1
            try:
                answer = await client.post(
                    self.fleet.url + WEBHOOK_PATH, data=form, headers=headers
                )
            except httpx.HTTPError as error:
                item.errors.append(type(error).__name__)
            else:
                if answer.status_code == 200:
                    break
                item.errors.append(f"HTTP {answer.status_code}")
                if answer.status_code < 500:
                    return
            await asyncio.sleep(_backoff(item.attempts))
        else:
            return
        item.accepted = True
        if number not in self._texters and not any(n.number == number for n in self.notifications):
            self._texters.append(number)
        inline = [m.text or "" for m in ElementTree.fromstring(answer.text).findall("Message")]
        if inline:
            item.inline = True
            item.reply, item.replied_at = " ".join(inline), time.time()
            return
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            # A notification the shop sent meanwhile is not the reply.
            notified = {NOTIFICATION_SMS.format(n.order) for n in self.notifications}
            later = [
                m for m in self.fleet.twilio.messages_to(number)[before:] if m.body not in notified
            ]
            if later:
                item.reply, item.replied_at = later[0].body, later[0].received_at
                return
            await asyncio.sleep(0.1)

    # -- callbacks --------------------------------------------------------------------------------

    async def _call_me_back(self) -> None:
        """A new customer texts that they want a call now (one request each)."""
        await asyncio.sleep(random.uniform(*CALLBACK_EVERY_SECONDS))
        number = _fresh_phone()
        async with httpx.AsyncClient(timeout=SMS_TIMEOUT) as client:
            await self._text(client, number, CALLBACK_REQUEST)
        self.callback_requests += [item for item in self.sent if item.customer == number]

    # -- the shop's backend -----------------------------------------------------------------------

    async def _shop(self) -> None:
        """One notification to a customer who texted (each gets one), retried like a backend
        retries: the same idempotency key on a failure, a 5xx or a 409."""
        await asyncio.sleep(random.uniform(*NOTIFY_EVERY_SECONDS))
        if not self._texters:
            return
        number = self._texters.pop(random.randrange(len(self._texters)))
        item = Notified(number, f"fleet-{secrets.token_hex(8)}", f"{random.randint(0, 99999):05d}")
        self.notifications.append(item)
        body = {
            "customer": {"phone": number},
            "response": NOTIFICATION_RESPONSE,
            "slots": {"order_number": item.order},
        }
        headers = {
            "Authorization": f"Bearer {self.env['NOTIFICATIONS_API_KEY']}",
            "Idempotency-Key": item.key,
        }
        async with httpx.AsyncClient(timeout=REPLY_TIMEOUT) as client:
            while item.attempts < MAX_ATTEMPTS:
                item.attempts += 1
                try:
                    answer = await client.post(
                        self.fleet.url + NOTIFY_PATH, json=body, headers=headers
                    )
                except httpx.HTTPError as error:
                    item.errors.append(type(error).__name__)
                else:
                    if answer.status_code in (200, 202):
                        item.accepted, item.status = True, answer.json()["status"]
                        return
                    item.errors.append(f"HTTP {answer.status_code}")
                    if answer.status_code < 500 and answer.status_code != 409:
                        return
                await asyncio.sleep(_backoff(item.attempts))

    # -- voice ------------------------------------------------------------------------------------

    async def _voice(self) -> None:
        assert self.fleet.control is not None
        call = VapiCall(
            base_url=self.fleet.url,
            server_secret=self.env["VAPI_SERVER_SECRET"],
            number=_fresh_phone(),
            timeout=REPLY_TIMEOUT,
        )
        call.control_url = self.fleet.control.control_url(call.call_id)
        try:
            if not await self._event(call, call.assistant_request):
                return
            for text in self._script():
                if self._stopping.is_set():
                    break
                await self._say(call, text)
                await self._think()
            await self._event(call, call.hang_up)
        finally:
            await call.aclose()

    @staticmethod
    async def _event(call: VapiCall, send) -> bool:
        """A server message, retried as VAPI retries them; False if it never got through."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await send()
                return True
            except httpx.HTTPError:
                await asyncio.sleep(_backoff(attempt))
        return False

    async def _say(self, call: VapiCall, text: str) -> None:
        item = self._record(VOICE, str(call.number), call.call_id, text)
        call.history.append({"role": "user", "content": text})
        messages = list(call.history)
        while item.attempts < MAX_ATTEMPTS:
            item.attempts += 1
            try:
                reply = await call.complete(messages)
            except (openai.APIConnectionError, openai.APIStatusError) as error:
                # No stream was opened (no connection, or an error status instead).
                item.errors.append(type(error).__name__)
                await asyncio.sleep(_backoff(item.attempts))
                continue
            except (openai.APIError, httpx.HTTPError) as error:
                # The stream was open (VAPI had its answer started: accepted), then dropped.
                item.accepted = True
                item.errors.append(type(error).__name__)
                await asyncio.sleep(_backoff(item.attempts))
                continue
            item.accepted = True
            if reply.text:
                item.reply, item.replied_at = reply.text, time.time()
                call.history.append({"role": "assistant", "content": reply.text})
            else:
                item.errors.append("empty answer")
            return

    # -- chat -------------------------------------------------------------------------------------

    async def _chat(self) -> None:
        user = "fleet-" + secrets.token_hex(6)
        now = int(time.time())
        token = jwt.encode(
            {"sub": user, "iat": now, "exp": now + 3600},
            self.env["WEBCHAT_JWT_SECRET"],
            algorithm="HS256",
        )
        chat = ChatClient(self.fleet.url.replace("http://", "ws://") + CHAT_PATH, token)
        try:
            for text in self._script():
                if self._stopping.is_set():
                    return
                item = self._record(CHAT, user, secrets.token_hex(8), text)
                await chat.converse(item)
                await self._think()
        finally:
            await chat.close()


class ChatClient:
    """The widget's side of one customer's chat: one socket at a time, reconnecting with
    backoff, resending what was not acknowledged."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ws: Any = None
        self.conversation_id: Optional[str] = None
        self.reconnects = 0

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def _connect(self) -> List[Dict[str, Any]]:
        """A new authenticated socket; the first page of history it was given."""
        self.ws = await websockets.connect(self.url, open_timeout=10)
        await self.ws.send(json.dumps({"type": "auth", "token": self.token}))
        ready = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        if ready.get("type") != "ready":
            raise ConnectionError(f"refused: {ready}")
        self.conversation_id = ready["conversation_id"]
        history = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        return history.get("messages") or []

    async def converse(self, item: Sent) -> None:
        """Send ``item`` and wait for its reply, through reconnects, as the widget would."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        frame = json.dumps({"type": "message", "id": item.key, "text": item.text})
        resend = True
        failures = 0
        while time.monotonic() < deadline:
            try:
                if self.ws is None:
                    history = await self._connect()
                    item.conversation_id = self.conversation_id
                    answer = _answer_in(history, item.key) if item.accepted else ""
                    if answer:
                        item.reply, item.replied_at = answer, time.time()
                        return
                    resend = not item.accepted
                item.conversation_id = self.conversation_id
                if resend:
                    if item.attempts >= MAX_ATTEMPTS:
                        return
                    item.attempts += 1
                    await self.ws.send(frame)
                    resend = False
                remaining = deadline - time.monotonic()
                message = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.1, remaining)))
            except asyncio.TimeoutError:
                return
            except (OSError, websockets.WebSocketException) as error:
                # Dropped, closed with 1012 by a draining replica, or refused while none was
                # ready: reconnect with the widget's backoff (1 s doubling), and resend if the
                # message had not been acknowledged.
                item.errors.append(_closed_reason(error))
                self.ws = None
                self.reconnects += 1
                failures += 1
                await asyncio.sleep(min(8.0, 2 ** (failures - 1)) * random.uniform(0.8, 1.2))
                continue
            kind = message.get("type")
            if kind == "ack" and message.get("id") == item.key:
                item.accepted = True
            elif kind == "error" and message.get("id") == item.key:
                item.errors.append(message.get("code", "error"))
                if message.get("retry") or message.get("code") in ("rate_limited", "busy"):
                    await asyncio.sleep(float(message.get("retry_after") or 1))
                    resend = True
                else:
                    return
            elif kind == "message" and message["message"].get("role") == "bot" and item.accepted:
                item.reply, item.replied_at = message["message"].get("text") or "", time.time()
                return


def _closed_reason(error: BaseException) -> str:
    code = getattr(error, "rcvd", None)
    return f"closed {code.code}" if code is not None else type(error).__name__


def _answer_in(history: Sequence[Dict[str, Any]], client_id: str) -> str:
    """The first bot message after the user message with ``client_id``, if any."""
    seen = False
    for message in history:
        if message.get("role") == "user" and message.get("client_message_id") == client_id:
            seen = True
        elif seen and message.get("role") == "bot":
            return message.get("text") or "(bot message)"
    return ""
