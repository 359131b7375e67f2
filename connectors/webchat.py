"""Web chat channel: an authenticated WebSocket, cross-channel history and live fan-out.

Rasa's stock ``socketio`` channel keys a chat by its socket id (a new conversation on every
reconnect), lets any client claim any session id when sessions persist, and cannot reach a tab
served by another replica. This channel keys the chat by the conversation identity resolves for
the signed-in customer, so the chat shows (and continues) what they said on the phone and by
SMS, and it pushes every new turn of that conversation, whichever channel or replica handled
it, to every open tab through the tracker store's Redis publish on ``omni:{<cid>}:live``.

Routes (under ``/webhooks/webchat``):

- ``GET /``: the widget page; ``GET /static/<file>``: its script and stylesheet.
- ``POST /session``: a signed anonymous session token, when ``WEBCHAT_ALLOW_ANONYMOUS`` is on.
- ``WS /ws``: the chat. The first frame must be ``{"type": "auth", "token": "<JWT>"}``: the
  token travels in a frame rather than in the URL, so it never lands in access logs or browser
  history. The client never names a conversation; the token decides it.

The frames are documented in the README ("Web chat protocol").
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, Union

import jwt
from pydantic import BaseModel, ValidationError, conint, constr
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.exceptions import WebsocketClosed
from sanic.request import Request
from websockets.exceptions import ConnectionClosed

from connectors.turns import TurnFailed, run_turn
from omnichannel.identity import (
    Address,
    IdentityStore,
    InvalidAddress,
    anon_address,
    phone_address,
    user_address,
)
from omnichannel.redis_client import (
    REDIS_FAILURES,
    StateUnavailable,
    conversation_key,
    redis_client,
)
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage
from omnichannel.settings import ConfigError, Settings, load_settings

logger = logging.getLogger(__name__)

CHANNEL_NAME = "webchat"
#: The channel kind this connector puts in UserMessage metadata (see DESIGN.md).
CHAT = "chat"
#: Input channel name -> channel kind, for events whose metadata does not say it.
INPUT_CHANNEL_KINDS = {"vapi": "voice", "twilio_sms": "sms", "webchat": "chat"}
CHANNEL_KINDS = ("voice", "sms", "chat")
#: The slot the VAPI connector stores each call's end-of-call report in (summary included).
CALL_REPORT_SLOT = "last_call"

STATIC_DIR = Path(__file__).parent / "static" / "webchat"
STATIC_FILES = {
    "widget.js": "application/javascript; charset=utf-8",
    "widget.css": "text/css; charset=utf-8",
}
#: The page loads nothing from elsewhere; bot images may come from any https host.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)

ANON_AUDIENCE = "omni-webchat-anonymous"
JWT_ALGORITHM = "HS256"
#: RFC 7518 3.2: an HS256 key MUST be at least as long as the hash (32 bytes); a shorter one can
#: be brute-forced offline from any token, and then any user's conversation signed into.
JWT_SECRET_MIN_BYTES = 32
DEMO_USER = "demo-customer"
DEMO_PHONE = "+14155552671"

# Close codes (4000-4999 are the application's own): the reason text says what went wrong.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SERVER_ERROR = 1011

#: Frames above this size get an error frame (Sanic itself drops the socket above 1 MiB).
MAX_FRAME_BYTES = 16 * 1024
MAX_TEXT_CHARS = 4000
MAX_TOKEN_CHARS = 8192
CLIENT_MESSAGE_ID = r"^[A-Za-z0-9_-]{8,64}$"
#: Accepted messages of one socket waiting for their turn: more are refused (not acknowledged)
#: rather than queued without bound, as each would still run after the tab closed.
MAX_PENDING_TURNS = 20
#: Bot messages can only be recognised as "already sent" for this long (own-turn dedupe).
OWN_MESSAGE_MEMORY = 256
#: How far back a history page looks for the turn a bot message answered (its channel).
CHANNEL_LOOKBACK_EVENTS = 500
HISTORY_READ_CHUNK = 200
#: Live events a socket may have waiting (a client that stopped reading): beyond this it is cut
#: off with LiveFeedLost, reconnects and replays the history instead of growing memory.
LIVE_BACKLOG_LIMIT = 1000
#: What sending or receiving raises once the client has gone.
SOCKET_CLOSED = (ConnectionClosed, WebsocketClosed)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebChatConfig:
    """Tunables from credentials.yml (secrets come from the environment, never from here)."""

    history_page_size: int = 50
    auth_timeout: float = 10.0
    rate_limit_burst: int = 10
    rate_limit_per_second: float = 1.0
    client_message_id_ttl: int = 24 * 3600
    anonymous_token_lifetime: int = 30 * 24 * 3600
    jwt_audience: Optional[str] = None

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> WebChatConfig:
        values = dict(credentials or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"credentials.yml {CHANNEL_NAME}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        config = cls(**{name: value for name, value in values.items() if value is not None})
        numbers = (
            config.history_page_size,
            config.auth_timeout,
            config.rate_limit_burst,
            config.rate_limit_per_second,
            config.client_message_id_ttl,
            config.anonymous_token_lifetime,
        )
        if any(not isinstance(n, (int, float)) or n <= 0 for n in numbers):
            raise ConfigError(f"credentials.yml {CHANNEL_NAME}: numeric options must be > 0")
        return config


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


class AuthRefused(Exception):
    """The socket must be closed: ``code`` is the close code, ``reason`` the close reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ChatIdentity:
    """Who the token says the client is, and the addresses its conversation may be joined by."""

    address: Address
    link_to: Tuple[Address, ...] = ()


class TokenVerifier:
    """Checks chat tokens and issues anonymous ones.

    Host-site tokens: HS256 with ``WEBCHAT_JWT_SECRET``, ``exp`` and ``sub`` required; ``sub``
    gives ``user:<sub>``; ``phone_number`` with ``phone_number_verified: true`` (OIDC claims)
    joins the user to that phone's conversation. Anonymous tokens are minted here with audience
    ``omni-webchat-anonymous`` and an unguessable ``anon_id``, so neither kind passes for the
    other.
    """

    def __init__(
        self,
        secret: str,
        allow_anonymous: bool,
        *,
        audience: Optional[str] = None,
        anonymous_lifetime: int = WebChatConfig.anonymous_token_lifetime,
    ) -> None:
        self._secret = secret
        self.allow_anonymous = allow_anonymous
        self._audience = audience
        self._anonymous_lifetime = anonymous_lifetime

    @classmethod
    def from_settings(cls, settings: Settings, config: WebChatConfig) -> TokenVerifier:
        return cls(
            settings.webchat_jwt_secret or "",
            settings.webchat_allow_anonymous,
            audience=config.jwt_audience,
            anonymous_lifetime=config.anonymous_token_lifetime,
        )

    def verify(self, token: str) -> ChatIdentity:
        """The identity of a token; AuthRefused (with a close code and reason) otherwise."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token is not a JWT") from None
        if unverified.get("aud") == ANON_AUDIENCE:
            return self._verify_anonymous(token)
        claims = self._decode(
            token,
            audience=self._audience,
            options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
        )
        try:
            address = user_address(str(claims["sub"]))
        except InvalidAddress as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"token subject: {error}") from None
        phone = claims.get("phone_number")
        if phone and claims.get("phone_number_verified") is True:
            try:
                return ChatIdentity(address, (phone_address(str(phone)),))
            except InvalidAddress as error:
                logger.warning("chat token of %s: phone not linked: %s", address.masked(), error)
        return ChatIdentity(address)

    def _verify_anonymous(self, token: str) -> ChatIdentity:
        if not self.allow_anonymous:
            raise AuthRefused(CLOSE_FORBIDDEN, "anonymous chat is disabled")
        claims = self._decode(
            token, audience=ANON_AUDIENCE, options={"require": ["exp", "anon_id"]}
        )
        try:
            return ChatIdentity(anon_address(str(claims["anon_id"])))
        except InvalidAddress as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"anonymous token: {error}") from None

    def _decode(self, token: str, **kwargs: Any) -> Dict[str, Any]:
        try:
            return jwt.decode(token, self._secret, algorithms=[JWT_ALGORITHM], **kwargs)
        except jwt.ExpiredSignatureError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthRefused(
                CLOSE_UNAUTHENTICATED, f"token lacks the {error.claim!r} claim"
            ) from None
        except jwt.PyJWTError as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"token rejected: {error}"[:120]) from None

    def issue_anonymous(self) -> Tuple[str, int]:
        """A fresh anonymous session token and its expiry (Unix seconds)."""
        expires_at = int(time.time()) + int(self._anonymous_lifetime)
        claims = {
            "aud": ANON_AUDIENCE,
            "anon_id": secrets.token_urlsafe(18),
            "iat": int(time.time()),
            "exp": expires_at,
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM), expires_at


def demo_chat_url(base_url: str, jwt_secret: str, lifetime: int = 7 * 24 * 3600) -> str:
    """A link that opens the widget signed in as the demo customer, whose verified phone
    (+1 415 555 2671, the simulators' default) joins the chat to that phone's conversation.

    The token rides in the URL fragment, which browsers never send to the server.
    """
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": DEMO_USER,
            "name": "Demo customer",
            "phone_number": DEMO_PHONE,
            "phone_number_verified": True,
            "iat": now,
            "exp": now + lifetime,
        },
        jwt_secret,
        algorithm=JWT_ALGORITHM,
    )
    return f"{base_url.rstrip('/')}/webhooks/{CHANNEL_NAME}/#token={token}"


# ---------------------------------------------------------------------------------------------
# Protocol: client frames, parsed at the edge
# ---------------------------------------------------------------------------------------------


class _Frame(BaseModel):
    class Config:
        extra = "forbid"
        anystr_strip_whitespace = False


class AuthFrame(_Frame):
    type: constr(regex=r"^auth$")
    token: constr(min_length=1, max_length=MAX_TOKEN_CHARS)


class TextFrame(_Frame):
    type: constr(regex=r"^message$")
    id: constr(regex=CLIENT_MESSAGE_ID)
    text: constr(min_length=1, max_length=MAX_TEXT_CHARS)


class ButtonFrame(_Frame):
    type: constr(regex=r"^button$")
    id: constr(regex=CLIENT_MESSAGE_ID)
    payload: constr(min_length=1, max_length=MAX_TEXT_CHARS)
    title: constr(max_length=MAX_TEXT_CHARS) = ""


class HistoryFrame(_Frame):
    type: constr(regex=r"^history$")
    before: conint(ge=0)
    limit: Optional[conint(ge=1, le=200)] = None


class PingFrame(_Frame):
    type: constr(regex=r"^ping$")
    id: Optional[constr(max_length=64)] = None


ClientFrame = Union[TextFrame, ButtonFrame, HistoryFrame, PingFrame]
_FRAME_TYPES = {
    "auth": AuthFrame,
    "message": TextFrame,
    "button": ButtonFrame,
    "history": HistoryFrame,
    "ping": PingFrame,
}


class BadFrame(ValueError):
    """A frame the server cannot use; ``code`` and the message go back in an error frame."""

    def __init__(self, code: str, message: str, frame_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.frame_id = frame_id


def parse_frame(data: Union[str, bytes]) -> Union[AuthFrame, ClientFrame]:
    """One client frame, checked for size, JSON, type and fields (BadFrame otherwise)."""
    if isinstance(data, (bytes, bytearray)):
        raise BadFrame("bad_frame", "frames must be JSON text, not binary")
    if len(data) > MAX_FRAME_BYTES or len(data.encode("utf-8")) > MAX_FRAME_BYTES:
        raise BadFrame("frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        raw = json.loads(data)
    except ValueError:
        raise BadFrame("bad_frame", "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadFrame("bad_frame", "frame must be a JSON object")
    frame_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    model = _FRAME_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    if model is None:
        raise BadFrame(
            "bad_frame", f"unknown frame type; expected one of {', '.join(_FRAME_TYPES)}", frame_id
        )
    try:
        return model.parse_obj(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise BadFrame(
            "bad_frame", f"invalid {raw['type']} frame: {problems}"[:300], frame_id
        ) from None


# ---------------------------------------------------------------------------------------------
# Events -> chat messages (history and live)
# ---------------------------------------------------------------------------------------------


def is_shown(event: Dict[str, Any]) -> bool:
    """Whether the chat shows this event: user and bot messages, and call reports."""
    kind = event.get("event")
    return kind in ("user", "bot") or (kind == "slot" and event.get("name") == CALL_REPORT_SLOT)


def event_channel(event: Dict[str, Any]) -> Optional[str]:
    """The channel kind of a user event, or of a bot event whose metadata says it."""
    metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    claimed = metadata.get("channel")
    if claimed in CHANNEL_KINDS:
        return claimed
    if event.get("event") == "user":
        return INPUT_CHANNEL_KINDS.get(event.get("input_channel") or "")
    return None


def message_id(event: Dict[str, Any]) -> str:
    """A stable id of a user or bot event, the same in history, live frames and own replies."""
    kind = event.get("event")
    if kind == "user" and event.get("message_id"):
        return f"u:{event['message_id']}"
    if kind == "slot" and isinstance(event.get("value"), dict) and event["value"].get("call_id"):
        # Carried-over slots repeat the report at each new session: one call, one message.
        return f"call:{event['value']['call_id']}"
    return f"{'u' if kind == 'user' else 'b'}:{event.get('timestamp')!r}"


def chat_message(event: Dict[str, Any], turn_channel: Optional[str]) -> Optional[Dict[str, Any]]:
    """A user or bot event as a chat ``message`` object; None for events a chat does not show.

    Bot events carry the channel of the user turn they answer (``turn_channel``) unless their
    metadata names one, as call summaries do; a ``kind`` in their metadata passes through, and
    the widget shows kinds it does not know as ordinary messages.
    """
    kind = event.get("event")
    metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    base = {"id": message_id(event), "timestamp": event.get("timestamp")}
    if kind == "user":
        text = event.get("text")
        if not text:
            return None
        shown = metadata.get("button_title") or text
        message = {**base, "role": "user", "channel": event_channel(event), "text": str(shown)}
        if metadata.get("client_message_id"):
            message["client_message_id"] = metadata["client_message_id"]
        return message
    if kind == "slot":
        report = event.get("value")
        if event.get("name") != CALL_REPORT_SLOT or not isinstance(report, dict):
            return None
        summary = report.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            return None
        text = f"Call summary: {summary.strip()}"
        reported_at = report.get("reported_at")
        return {
            **base,
            "timestamp": reported_at
            if isinstance(reported_at, (int, float))
            else base["timestamp"],
            "role": "bot",
            "channel": "voice",
            "kind": "call_summary",
            **render_chat(BotMessage(text=text)),
        }
    if kind == "bot":
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        parsed = BotMessage.from_rasa({**data, "text": event.get("text")})
        rendered = render_chat(parsed)
        shown = parsed.text or parsed.buttons or parsed.image or parsed.attachment
        if not (shown or "custom" in rendered):
            return None
        message = {
            **base,
            "role": "bot",
            "channel": event_channel(event) or turn_channel,
            **rendered,
        }
        if isinstance(metadata.get("kind"), str):
            message["kind"] = metadata["kind"]
        return message
    return None


class EventLog:
    """Pages through a conversation's event log for the chat history."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @classmethod
    def of_agent(cls, agent: Any) -> EventLog:
        store = getattr(agent, "tracker_store", None)
        # Rasa wraps the configured store (FailSafeTrackerStore, AwaitableTrackerStore), keeping
        # it in ``_tracker_store``; the paging reads below are ours, not in Rasa's interface.
        while hasattr(store, "_tracker_store"):
            store = store._tracker_store
        if not hasattr(store, "read_events") or not hasattr(store, "event_count"):
            raise ConfigError(
                "the web chat history needs tracker_store type "
                "connectors.tracker_store.RedisEventLogTrackerStore in endpoints.yml"
            )
        return cls(store)

    async def length(self, conversation_id: str) -> int:
        return await self._store.event_count(conversation_id)

    async def page(
        self, conversation_id: str, before: int, limit: int
    ) -> Tuple[List[Dict[str, Any]], Optional[int], Optional[str]]:
        """Up to ``limit`` chat messages from the events before index ``before``.

        Returns the messages (oldest first), the cursor for the next older page (None at the
        beginning) and the channel of the latest user turn in the page (for live bot events).
        """
        picked: List[Tuple[int, Dict[str, Any]]] = []
        # ``before`` comes from the client: past the end it means the end (walking the gap
        # would cost one empty Redis read per chunk, without bound).
        position = min(before, await self.length(conversation_id))
        while position > 0 and len(picked) < limit:
            start = max(0, position - HISTORY_READ_CHUNK)
            chunk = await self._store.read_events(conversation_id, start, position - 1)
            for offset in range(len(chunk) - 1, -1, -1):
                event = chunk[offset]
                if is_shown(event):
                    picked.append((start + offset, event))
                    if len(picked) >= limit:
                        break
            position = start
        picked.reverse()
        first_index = picked[0][0] if picked else 0
        turn_channel = await self._channel_before(conversation_id, first_index)
        messages = []
        ids: Set[str] = set()
        for _, event in picked:
            if event.get("event") == "user":
                turn_channel = event_channel(event) or turn_channel
            message = chat_message(event, turn_channel)
            if message is not None and message["id"] not in ids:
                ids.add(message["id"])
                messages.append(message)
        # More may exist only if the page filled up before the scan reached the log's start.
        cursor = first_index if len(picked) >= limit and first_index > 0 else None
        return messages, cursor, turn_channel

    async def _channel_before(self, conversation_id: str, index: int) -> Optional[str]:
        """The channel of the last user turn before ``index`` (the turn a page's first bot
        messages answered), looking back a bounded distance."""
        position = index
        while position > 0 and index - position < CHANNEL_LOOKBACK_EVENTS:
            start = max(0, position - HISTORY_READ_CHUNK)
            chunk = await self._store.read_events(conversation_id, start, position - 1)
            for event in reversed(chunk):
                if event.get("event") == "user":
                    return event_channel(event)
            position = start
        return None


# ---------------------------------------------------------------------------------------------
# Live fan-out: one Redis subscription per conversation per process
# ---------------------------------------------------------------------------------------------


class LiveFeedLost(Exception):
    """The Redis subscription broke; the socket closes so the client reconnects and replays."""


@dataclass(eq=False)
class LiveSubscription:
    conversation_id: str
    queue: asyncio.Queue[Union[Dict[str, Any], LiveFeedLost]] = field(
        default_factory=lambda: asyncio.Queue(LIVE_BACKLOG_LIMIT)
    )
    #: Set once the subscriber fell behind and was told LiveFeedLost: nothing more is queued.
    cut_off: bool = False

    def deliver(self, item: Union[Dict[str, Any], LiveFeedLost]) -> None:
        """Queues ``item``; a full backlog (the client stopped reading) or a failure replaces
        what is waiting with LiveFeedLost, so the socket closes and the client replays."""
        if self.cut_off:
            return
        if not isinstance(item, LiveFeedLost):
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                item = LiveFeedLost("live updates fell behind")
        self.cut_off = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


class LiveHub:
    """Fans the tracker store's ``omni:{<cid>}:live`` publishes out to this process's sockets.

    One pub/sub connection per process (not per socket), reference-counted subscriptions, and
    ``subscribe`` returns only once Redis confirmed it, so a history read made afterwards cannot
    miss an event published in between. If the subscription breaks, every socket is told
    (LiveFeedLost) and the next subscriber starts a fresh connection.
    """

    def __init__(self, redis_url: Optional[str] = None) -> None:
        self._redis_url = redis_url
        self._pubsub: Any = None
        self._reader: Optional[asyncio.Task] = None
        self._subscribers: Dict[str, Set[LiveSubscription]] = {}
        self._confirmations: Dict[str, asyncio.Future] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def channel(conversation_id: str) -> str:
        return conversation_key(conversation_id, "live")

    async def subscribe(self, conversation_id: str, timeout: float = 5.0) -> LiveSubscription:
        """Raises StateUnavailable when Redis does not confirm the subscription."""
        subscription = LiveSubscription(conversation_id)
        async with self._lock:
            self._subscribers.setdefault(conversation_id, set()).add(subscription)
            try:
                await self._confirm(conversation_id, timeout)
            except (*REDIS_FAILURES, asyncio.TimeoutError, LiveFeedLost) as error:
                await self._release(subscription)
                raise StateUnavailable(
                    f"live updates unavailable ({type(error).__name__})"
                ) from error
            except asyncio.CancelledError:
                # The socket closed while Redis had not confirmed yet (Sanic cancels the
                # handler): left behind, the channel would stay subscribed and fill its queue.
                await self._release(subscription)
                raise
        return subscription

    async def _confirm(self, conversation_id: str, timeout: float) -> None:
        if self._pubsub is None:
            self._pubsub = redis_client(self._redis_url).pubsub()
        confirmed = self._confirmations.get(conversation_id)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[conversation_id] = confirmed
            await self._pubsub.subscribe(self.channel(conversation_id))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(asyncio.shield(confirmed), timeout)

    async def unsubscribe(self, subscription: LiveSubscription) -> None:
        async with self._lock:
            await self._release(subscription)

    async def _release(self, subscription: LiveSubscription) -> None:
        """Forgets a subscriber, unsubscribing the channel after its last one (lock held)."""
        if self._drop(subscription) and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(self.channel(subscription.conversation_id))
            except REDIS_FAILURES as error:
                logger.warning("web chat: unsubscribe failed: %s", type(error).__name__)

    def _drop(self, subscription: LiveSubscription) -> bool:
        """Forget a subscriber; True when it was the conversation's last one."""
        subscribers = self._subscribers.get(subscription.conversation_id)
        if subscribers is None:
            return False
        subscribers.discard(subscription)
        if subscribers:
            return False
        del self._subscribers[subscription.conversation_id]
        confirmed = self._confirmations.pop(subscription.conversation_id, None)
        if confirmed is not None and not confirmed.done():
            confirmed.cancel()
        return True

    async def _read(self) -> None:
        pubsub = self._pubsub
        try:
            while self._subscribers or self._confirmations:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure must reach every socket
            logger.error("web chat: live feed lost: %s: %s", type(error).__name__, error)
            self._fail_all(LiveFeedLost(f"live updates interrupted ({type(error).__name__})"))
            try:
                await pubsub.reset()
            except REDIS_FAILURES:
                pass

    def _dispatch(self, message: Dict[str, Any]) -> None:
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        conversation_id = channel[channel.find("{") + 1 : channel.rfind("}")]
        if message.get("type") == "subscribe":
            confirmed = self._confirmations.get(conversation_id)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(True)
            return
        if message.get("type") != "message":
            return
        try:
            event = json.loads(message["data"])
        except ValueError:
            logger.warning("web chat: unreadable live event on %s", conversation_id)
            return
        for subscription in list(self._subscribers.get(conversation_id, ())):
            subscription.deliver(event)

    def _fail_all(self, failure: LiveFeedLost) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.deliver(failure)
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(failure)
        self._subscribers = {}
        self._confirmations = {}
        self._pubsub = None


#: Turn workers of closed sockets still finishing their accepted turns (kept from the GC).
_turn_workers: Set[asyncio.Task] = set()

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveHub] = weakref.WeakKeyDictionary()


def live_hub() -> LiveHub:
    """The running event loop's hub (Redis connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = LiveHub()
    return hub


# ---------------------------------------------------------------------------------------------
# One socket
# ---------------------------------------------------------------------------------------------


class TokenBucket:
    """Per-connection rate limit: ``burst`` frames at once, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate)
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def take(self) -> float:
        """0 when a frame may pass, else the seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class WebChatOutput(OutputChannel):
    """Sends a turn's bot messages to the socket that sent the turn, as Rasa produces them.

    ``name()`` is ``webchat`` so designers' ``channel: webchat`` variations are chosen. Other
    tabs of the conversation get the same messages from the live feed; this socket remembers
    the ids it sent so the live feed does not deliver them twice.
    """

    def __init__(self, connection: ChatConnection) -> None:
        self._connection = connection

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        # A message already delivered on another channel (the copy of a "text me that" SMS)
        # keeps that channel's badge, as it has in the history.
        delivered_on = BotMessage.from_rasa(message).delivered_on
        event = {
            "event": "bot",
            "timestamp": message.get("timestamp", time.time()),
            "text": message.get("text"),
            "data": message,
            "metadata": {"channel": delivered_on} if delivered_on else {},
        }
        rendered = chat_message(event, CHAT)
        if rendered is None:
            return
        self._connection.remember_own(rendered["id"])
        await self._connection.send({"type": "message", "message": rendered})

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"text": text})


class ChatConnection:
    """The lifetime of one authenticated socket: history, frames, turns and the live feed."""

    def __init__(
        self,
        ws: Any,
        channel: WebChatInput,
        agent: Any,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
    ) -> None:
        self.ws = ws
        self.channel = channel
        self.config = channel.config
        self.agent = agent
        self.on_new_message = on_new_message
        self.identity: Optional[ChatIdentity] = None
        self.conversation_id = ""
        self.bucket = TokenBucket(self.config.rate_limit_burst, self.config.rate_limit_per_second)
        self.turns: asyncio.Queue = asyncio.Queue()
        self.turn_channel: Optional[str] = None
        self._own_ids: Dict[str, None] = {}
        self._own_client_ids: Dict[str, None] = {}

    async def send(self, frame: Dict[str, Any]) -> None:
        """Sends a frame; once the client is gone, frames are dropped (the reader notices the
        close and ends the connection; a turn still running finishes and is stored)."""
        try:
            await self.ws.send(json.dumps(frame, ensure_ascii=False))
        except SOCKET_CLOSED:
            pass

    async def error(
        self, code: str, message: str, frame_id: Optional[str] = None, **extra: Any
    ) -> None:
        frame = {"type": "error", "code": code, "message": message, **extra}
        if frame_id:
            frame["id"] = frame_id
        await self.send(frame)

    def remember_own(self, message_id_: str) -> None:
        self._own_ids[message_id_] = None
        while len(self._own_ids) > OWN_MESSAGE_MEMORY:
            self._own_ids.pop(next(iter(self._own_ids)))

    def _remember_own_client_id(self, client_id: str) -> None:
        self._own_client_ids[client_id] = None
        while len(self._own_client_ids) > OWN_MESSAGE_MEMORY:
            self._own_client_ids.pop(next(iter(self._own_client_ids)))

    # -- start --------------------------------------------------------------------------------

    async def authenticate(self) -> ChatIdentity:
        data = await self.ws.recv(timeout=self.config.auth_timeout)
        if data is None:
            raise AuthRefused(
                CLOSE_UNAUTHENTICATED,
                f"no auth frame within {self.config.auth_timeout:g} s",
            )
        try:
            frame = parse_frame(data)
        except BadFrame as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"first frame: {error}"[:120]) from None
        if not isinstance(frame, AuthFrame):
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "the first frame must be an auth frame")
        return self.channel.verifier.verify(frame.token)

    async def run(self) -> None:
        try:
            self.identity = await self.authenticate()
        except AuthRefused as refused:
            logger.info("web chat: socket refused: %s", refused.reason)
            await self.ws.close(refused.code, refused.reason)
            return
        hub = live_hub()
        try:
            log = EventLog.of_agent(self.agent)
            self.conversation_id = await IdentityStore().resolve_conversation(
                self.identity.address, channel=CHAT, link_to=self.identity.link_to
            )
            subscription = await hub.subscribe(self.conversation_id)
        except (StateUnavailable, ConfigError) as error:
            logger.error("web chat: cannot open the conversation: %s", error)
            await self.ws.close(CLOSE_SERVER_ERROR, "conversation unavailable, try again later")
            return
        tasks: List[asyncio.Task] = []
        # Turns outlive the socket: a message acknowledged as received is processed and stored
        # even if the customer closes the tab meanwhile (cancelling would lose the turn).
        worker = asyncio.create_task(self._run_turns())
        _turn_workers.add(worker)
        worker.add_done_callback(_turn_workers.discard)
        try:
            seen = await self._start(log)
            tasks = [
                asyncio.create_task(self._pump_live(subscription, seen)),
                asyncio.create_task(self._read_frames(log)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled():
                    task.result()
        except LiveFeedLost as lost:
            await self._close_after_error("live_feed_lost", str(lost))
        except StateUnavailable as error:
            logger.error("web chat %s: %s", self.conversation_id, error)
            await self._close_after_error("state_unavailable", "conversation state unavailable")
        except SOCKET_CLOSED:
            pass
        finally:
            self.turns.put_nowait(None)  # the worker stops once the accepted turns are done
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.unsubscribe(subscription)

    async def _close_after_error(self, code: str, message: str) -> None:
        try:
            await self.error(code, f"{message}; reconnect to continue", retry=True)
            await self.ws.close(CLOSE_SERVER_ERROR, message[:120])
        except SOCKET_CLOSED:
            pass

    async def _start(self, log: EventLog) -> Set[str]:
        """Sends ``ready`` and the latest history page; returns the ids it contained."""
        assert self.identity is not None
        length = await _state(log.length(self.conversation_id))
        messages, cursor, self.turn_channel = await _state(
            log.page(self.conversation_id, length, self.config.history_page_size)
        )
        await self.send(
            {
                "type": "ready",
                "conversation_id": self.conversation_id,
                "user": self.identity.address.masked(),
                "limits": {
                    "max_frame_bytes": MAX_FRAME_BYTES,
                    "max_text_chars": MAX_TEXT_CHARS,
                    "rate_limit_burst": self.config.rate_limit_burst,
                    "rate_limit_per_second": self.config.rate_limit_per_second,
                },
            }
        )
        await self.send(
            {"type": "history", "initial": True, "messages": messages, "before": cursor}
        )
        return {message["id"] for message in messages}

    # -- tasks --------------------------------------------------------------------------------

    async def _pump_live(self, subscription: LiveSubscription, seen: Set[str]) -> None:
        while True:
            item = await subscription.queue.get()
            if isinstance(item, LiveFeedLost):
                raise item
            if item.get("event") == "user":
                self.turn_channel = event_channel(item) or self.turn_channel
            message = chat_message(item, self.turn_channel)
            if message is None or message["id"] in seen:
                continue
            if message["id"].startswith("call:"):
                seen.add(message["id"])
            if message["id"] in self._own_ids:
                self._own_ids.pop(message["id"])
                continue
            if message.get("client_message_id") in self._own_client_ids:
                continue
            await self.send({"type": "message", "message": message})

    async def _read_frames(self, log: EventLog) -> None:
        while True:
            data = await self.ws.recv()
            if data is None:
                continue
            wait = self.bucket.take()
            if wait:
                await self.error(
                    "rate_limited",
                    "too many frames; this one was dropped",
                    _frame_id(data),
                    retry_after=round(wait, 2),
                )
                continue
            try:
                frame = parse_frame(data)
            except BadFrame as error:
                await self.error(error.code, str(error), error.frame_id)
                continue
            if isinstance(frame, PingFrame):
                await self.send({"type": "pong", **({"id": frame.id} if frame.id else {})})
            elif isinstance(frame, HistoryFrame):
                await self._send_older(log, frame)
            elif isinstance(frame, AuthFrame):
                await self.error("bad_frame", "already authenticated")
            else:
                await self._accept(frame)

    async def _send_older(self, log: EventLog, frame: HistoryFrame) -> None:
        try:
            messages, cursor, _ = await log.page(
                self.conversation_id, frame.before, frame.limit or self.config.history_page_size
            )
        except StateUnavailable:
            await self.error("state_unavailable", "history could not be read", retry=True)
            return
        await self.send(
            {"type": "history", "initial": False, "messages": messages, "before": cursor}
        )

    async def _accept(self, frame: Union[TextFrame, ButtonFrame]) -> None:
        """Acknowledges a message once, however often it is resent; queues its turn."""
        if self.turns.qsize() >= MAX_PENDING_TURNS:
            await self.error(
                "busy",
                "your message was not processed: too many messages are waiting; "
                "please send it again in a moment",
                frame.id,
                retry=True,
            )
            return
        key = conversation_key(self.conversation_id, "webchat", "client_message", frame.id)
        try:
            first = await redis_client().set(
                key, b"1", nx=True, ex=int(self.config.client_message_id_ttl)
            )
        except REDIS_FAILURES as error:
            logger.error("web chat %s: dedupe failed: %s", self.conversation_id, error)
            await self.error(
                "not_processed",
                "your message was not processed (conversation state unavailable); please resend it",
                frame.id,
                retry=True,
            )
            return
        await self.send({"type": "ack", "id": frame.id, "duplicate": not first})
        if first:
            self._remember_own_client_id(frame.id)
            self.turns.put_nowait((frame, key))

    async def _run_turns(self) -> None:
        while (item := await self.turns.get()) is not None:
            await self._turn(*item)

    async def _turn(self, frame: Union[TextFrame, ButtonFrame], dedupe_key: str) -> None:
        assert self.identity is not None
        metadata: Dict[str, Any] = {
            "channel": CHAT,
            "address": str(self.identity.address),
            "client_message_id": frame.id,
        }
        if isinstance(frame, ButtonFrame):
            text = frame.payload
            if frame.title:
                metadata["button_title"] = frame.title
        else:
            text = frame.text
        message = UserMessage(
            text,
            WebChatOutput(self),
            self.conversation_id,
            input_channel=CHANNEL_NAME,
            metadata=metadata,
        )
        if not self.agent.is_ready():
            # Rasa would drop the message with only a log line while its model loads.
            await _forget_quietly(dedupe_key)
            await self.error(
                "not_processed",
                "your message was not processed: the assistant is starting; please resend it",
                frame.id,
                retry=True,
            )
            return
        await self.send({"type": "typing", "on": True})
        try:
            await run_turn(self.agent, self.on_new_message, message)
        except TurnFailed as failure:
            logger.error("web chat %s: turn failed: %s", self.conversation_id, failure)
            if failure.before_processing:
                await _forget_quietly(dedupe_key)
            await self.error(
                "not_processed",
                "your message was not processed: "
                + ("please resend it" if failure.before_processing else "something went wrong")
                + f" ({failure.reason.split(':')[0]})",
                frame.id,
                retry=failure.before_processing,
            )
        except Exception:  # noqa: BLE001 - the customer must hear about any failure
            logger.exception("web chat %s: turn crashed", self.conversation_id)
            await self.error(
                "not_processed", "your message was not processed (internal error)", frame.id
            )
        finally:
            await self.send({"type": "typing", "on": False})


async def _state(pending: Awaitable[Any]) -> Any:
    """Awaits a read of conversation state, as StateUnavailable when Redis fails."""
    try:
        return await pending
    except REDIS_FAILURES as error:
        raise StateUnavailable(f"Redis unavailable ({type(error).__name__})") from error


async def _forget_quietly(key: str) -> None:
    try:
        await redis_client().delete(key)
    except REDIS_FAILURES as error:
        logger.warning("web chat: could not clear %s: %s", key, type(error).__name__)


def _frame_id(data: Union[str, bytes]) -> Optional[str]:
    """The ``id`` of a frame that will not be parsed (so its error can name it), if cheap."""
    if not isinstance(data, str) or len(data) > MAX_FRAME_BYTES:
        return None
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    frame_id = raw.get("id") if isinstance(raw, dict) else None
    return frame_id if isinstance(frame_id, str) and len(frame_id) <= 64 else None


# ---------------------------------------------------------------------------------------------
# The channel
# ---------------------------------------------------------------------------------------------


class WebChatInput(InputChannel):
    """Rasa input channel ``webchat`` (credentials.yml: ``connectors.webchat.WebChatInput``)."""

    def __init__(self, verifier: TokenVerifier, config: WebChatConfig) -> None:
        self.verifier = verifier
        self.config = config

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> WebChatInput:
        settings = load_settings()
        settings.require("WEBCHAT_JWT_SECRET")
        if len((settings.webchat_jwt_secret or "").encode("utf-8")) < JWT_SECRET_MIN_BYTES:
            raise ConfigError(
                f"WEBCHAT_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes "
                "(HS256 keys shorter than the hash can be guessed from any token)"
            )
        config = WebChatConfig.from_credentials(credentials)
        return cls(TokenVerifier.from_settings(settings, config), config)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("omni_webchat", __name__)

        @bp.route("/", methods=["GET"])
        async def page(request: Request) -> Any:
            if not request.path.endswith("/"):
                # The page loads its assets by relative URL, which needs the trailing slash.
                return response.redirect(request.path + "/")
            return await response.file(
                STATIC_DIR / "index.html",
                headers={
                    "Content-Security-Policy": PAGE_SECURITY_POLICY,
                    "Cache-Control": "no-cache",
                    "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff",
                },
                mime_type="text/html; charset=utf-8",
            )

        @bp.route("/static/<name>", methods=["GET"])
        async def static(_: Request, name: str) -> Any:
            if name not in STATIC_FILES:
                return response.json({"error": "no such file"}, status=404)
            return await response.file(
                STATIC_DIR / name,
                headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
                mime_type=STATIC_FILES[name],
            )

        @bp.route("/session", methods=["POST"])
        async def session(_: Request) -> Any:
            if not self.verifier.allow_anonymous:
                return response.json({"error": "anonymous chat is disabled"}, status=403)
            token, expires_at = self.verifier.issue_anonymous()
            return response.json(
                {"token": token, "expires_at": expires_at},
                headers={"Cache-Control": "no-store"},
            )

        @bp.websocket("/ws")
        async def chat(request: Request, ws: Any) -> None:
            await ChatConnection(ws, self, request.app.ctx.agent, on_new_message).run()

        return bp
