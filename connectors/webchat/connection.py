"""One chat socket's life: authentication, the opening history, frames in, turns, the live feed.

A socket reads frames and pumps the live feed at the same time; its turns run one after another
in a worker that outlives the socket, because a message acknowledged as received is processed
and stored even if the customer closes the tab meanwhile (cancelling would lose the turn).

Each message is recorded in Redis as durable in-flight work before it is acknowledged, and held
until it is done by the socket's :class:`~connectors.webchat.turns.SocketTurns` (queued, run,
leases renewed together, handed off at a drain's bound). What the socket needs of the channel
that accepted it is :class:`ChatChannel`, a protocol: this module never imports the channel.

A button frame's payload goes to Rasa as it is (Rasa reads ``/intent{entities}`` in it), so it
is accepted only when the bot offered that payload in this conversation; typed text is escaped
by ``run_turn``. A customer can choose what the bot offered, never name an intent of their own.

While the server drains, message frames are not acknowledged (nor refused: the widget keeps an
unacknowledged message and resends it once it has reconnected) and the socket closes with 1012
as soon as the messages it accepted are answered; those not done by the drain's bound are handed
off (their leases end at once, another replica's sweep takes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Dict, List, Optional, Protocol, Set

from rasa.core.channels.channel import OutputChannel
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from connectors.drain import CLOSE_SERVICE_RESTART
from connectors.event_log.reading import next_turn_channel
from connectors.turns.durable import DurableTurns
from connectors.turns.run import TurnFailed
from connectors.webchat.auth import AuthRefused, ChatIdentity, TokenVerifier
from connectors.webchat.history import EventLog, chat_message
from connectors.webchat.live import LiveFeedLost, LiveSubscription, live_hub
from connectors.webchat.state import SOCKET_LEASE_SECONDS, SessionBucket, SessionLimits, SocketHold
from connectors.webchat.turns import AcceptedTurn, SocketTurns, run_chat_turn, turn_payload
from connectors.webchat.wire import (
    BAD_FRAME,
    BUSY,
    CLOSE_SERVER_ERROR,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
    FILES_PATH,
    LIVE_FEED_LOST,
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    NOT_PROCESSED,
    RATE_LIMITED,
    STATE_UNAVAILABLE,
    AuthFrame,
    BadFrame,
    ButtonFrame,
    Frame,
    HistoryFrame,
    PingFrame,
    TextFrame,
    TurnFrame,
    ack_frame,
    encode,
    error_frame,
    frame_id,
    history_frame,
    message_frame,
    parse_frame,
    pong_frame,
    ready_frame,
    typing_frame,
)
from omnichannel import tracing
from omnichannel.channels import CHAT, LABELS, WEBCHAT
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import TIMEZONE_FIELD
from omnichannel.outbound.items import chat_opened
from omnichannel.outbound.policy import zone_info
from omnichannel.presence import ChatPresence
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.rendering.messages import BotMessage
from omnichannel.tasks import BackgroundTasks, cancellable
from omnichannel.uploads import UploadStore

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

#: Bot messages can only be recognised as "already sent" for this long (own-turn dedupe).
OWN_MESSAGE_MEMORY = 256
#: How many of the conversation's latest messages a button frame's payload is looked for in (the
#: widget's history shows buttons on those); older choices are refused, the customer types them.
OFFER_LOOKBACK_MESSAGES = 200
#: What sending or receiving raises once the client has gone.
SOCKET_CLOSED = (ConnectionClosed, WebsocketClosed)
#: Time a drain keeps before its bound to hand off the messages not done yet.
HANDOFF_SECONDS = 1.0


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
        return WEBCHAT

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
        # The socket shows these buttons before Rasa stores the turn: a quick click must find them.
        for button in rendered.get("buttons") or ():
            if "payload" in button:
                self._connection.remember_offered(button["payload"])
        with tracing.span("chat.frame"):
            await self._connection.send(message_frame(rendered))

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"text": text})


def _remember(memory: Dict[str, None], key: str) -> None:
    """Adds ``key`` to an insertion-ordered memory of at most OWN_MESSAGE_MEMORY keys."""
    memory[key] = None
    while len(memory) > OWN_MESSAGE_MEMORY:
        memory.pop(next(iter(memory)))


class ChatChannel(Protocol):
    """What a socket uses of the channel that accepted it (the ``webchat`` input channel): its
    options, the token verifier, the session limits, the in-flight work and the workers that run
    and renew it. A protocol, so this module never imports the channel back."""

    options: Any
    redis_url: str
    verifier: TokenVerifier
    sessions: SessionLimits
    turns: DurableTurns
    turn_workers: BackgroundTasks
    lease_renewals: BackgroundTasks
    workers: Set[ChatConnection]

    @property
    def draining(self) -> bool: ...


class ChatConnection:
    """The lifetime of one authenticated socket: history, frames, turns and the live feed."""

    def __init__(
        self,
        ws: Any,
        channel: ChatChannel,
        agent: Agent,
    ) -> None:
        self.ws = ws
        self.channel = channel
        self.options = channel.options
        self.agent = agent
        self.identity: Optional[ChatIdentity] = None
        self.conversation_id = ""
        #: The browser's time zone, from the auth frame (when it is a known IANA zone).
        self.timezone: Optional[str] = None
        self.bucket: Optional[SessionBucket] = None
        #: The messages this socket acknowledged, until each is done.
        self.turns = SocketTurns(channel.turns, channel.lease_renewals)
        self.turn_channel: Optional[str] = None
        self._own_ids: Dict[str, None] = {}
        self._own_client_ids: Dict[str, None] = {}
        self._offered_here: Dict[str, None] = {}

    async def send(self, frame: Frame) -> None:
        """Sends a frame; once the client is gone, frames are dropped (the reader notices the
        close and ends the connection; a turn still running finishes and is stored)."""
        try:
            await self.ws.send(encode(frame))
        except SOCKET_CLOSED:
            pass

    async def error(
        self, code: str, message: str, client_id: Optional[str] = None, **extra: Any
    ) -> None:
        await self.send(error_frame(code, message, client_id, **extra))

    def remember_own(self, message_id: str) -> None:
        _remember(self._own_ids, message_id)

    def remember_offered(self, payload: str) -> None:
        _remember(self._offered_here, payload)

    # -- start --------------------------------------------------------------------------------

    async def authenticate(self) -> ChatIdentity:
        data = await self.ws.recv(timeout=self.options.auth_timeout)
        if data is None:
            raise AuthRefused(
                CLOSE_UNAUTHENTICATED,
                f"no auth frame within {self.options.auth_timeout:g} s",
            )
        try:
            frame = parse_frame(data)
        except BadFrame as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"first frame: {error}"[:120]) from None
        if not isinstance(frame, AuthFrame):
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "the first frame must be an auth frame")
        identity = self.channel.verifier.verify(frame.token)
        if frame.timezone and zone_info(frame.timezone) is not None:
            self.timezone = frame.timezone
        return identity

    async def run(self) -> None:
        try:
            self.identity = await self.authenticate()
        except AuthRefused as refused:
            logger.info("web chat: socket refused: %s", refused.reason)
            await self.ws.close(refused.code, refused.reason)
            return
        self.bucket = SessionBucket(
            self.channel.redis_url,
            self.identity.address,
            self.options.rate_limit_burst,
            self.options.rate_limit_per_second,
        )
        socket_id = uuid.uuid4().hex
        if not await self._hold_place(socket_id):
            return
        hub = live_hub(self.channel.redis_url)
        try:
            log = EventLog.of_agent(self.agent)
            self.conversation_id = await IdentityStore(
                redis_client(self.channel.redis_url)
            ).resolve_conversation(
                self.identity.address, channel=CHAT, link_to=self.identity.link_to
            )
            subscription = await hub.subscribe(self.conversation_id)
            await self._presence().opened(self.conversation_id, socket_id)
            if self.timezone:
                # The conversation knows the customer's zone better than their number's region.
                await IdentityStore(redis_client(self.channel.redis_url)).set_extra(
                    self.conversation_id, TIMEZONE_FIELD, self.timezone
                )
            await chat_opened(self.channel.redis_url, self.conversation_id)
        except (StateUnavailable, ConfigError, *REDIS_FAILURES) as error:
            logger.error("web chat: cannot open the conversation: %s", error)
            await self.ws.close(CLOSE_SERVER_ERROR, "conversation unavailable, try again later")
            await self._release_place(socket_id)
            return
        self.channel.turn_workers.start(self._run_turns(), f"turns of chat {self.conversation_id}")
        tasks = []
        try:
            seen = await self._start(log)
            tasks = [
                asyncio.create_task(self._pump_live(subscription, seen)),
                asyncio.create_task(self._read_frames(log)),
                asyncio.create_task(self._keep_place(socket_id)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled():
                    task.result()
        except LiveFeedLost as lost:
            await self._close_after_error(LIVE_FEED_LOST, str(lost))
        except StateUnavailable as error:
            logger.error("web chat %s: %s", self.conversation_id, error)
            await self._close_after_error(STATE_UNAVAILABLE, "conversation state unavailable")
        except SOCKET_CLOSED:
            pass
        finally:
            self.turns.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.unsubscribe(subscription)
            await self._release_place(socket_id)
            with contextlib.suppress(*REDIS_FAILURES):
                await self._presence().closed(self.conversation_id, socket_id)

    async def close_for_restart(self, deadline: float) -> None:
        """Closes the socket with 1012 once :meth:`settle` returns: the client reconnects, to
        another replica, which also takes the handed-off messages over."""
        await self.settle(deadline)
        try:
            await self.ws.close(CLOSE_SERVICE_RESTART, "server restarting; reconnect")
        except SOCKET_CLOSED:
            pass

    async def settle(self, deadline: float) -> None:
        """Returns once the messages this socket accepted are answered, or just before
        ``deadline`` (``time.monotonic()``), handing off those not done."""
        bound = deadline - HANDOFF_SECONDS
        try:
            await asyncio.wait_for(self.turns.queue.join(), max(0.0, bound - time.monotonic()))
        except asyncio.TimeoutError:
            released = await self.turns.hand_off()
            logger.warning(
                "web chat %s: %d accepted message(s) not done at the drain's bound, handed off",
                self.conversation_id,
                released,
            )

    # -- the socket's place in its session (state.py) -------------------------------------

    async def _hold_place(self, socket_id: str) -> bool:
        """Takes the socket's place in its session; closes the socket when it may not open."""
        assert self.identity is not None
        try:
            hold = await self.channel.sessions.hold_socket(
                redis_client(self.channel.redis_url), self.identity.address, socket_id
            )
        except REDIS_FAILURES as error:
            logger.error("web chat: session limits unavailable: %s", type(error).__name__)
            await self.ws.close(CLOSE_SERVER_ERROR, "conversation unavailable, try again later")
            return False
        if hold.held:
            return True
        await self._refuse_place(hold)
        return False

    async def _refuse_place(self, hold: SocketHold) -> None:
        if hold.revoked:
            await self.ws.close(CLOSE_UNAUTHENTICATED, "session ended")
        else:
            cap = self.channel.sessions.max_sockets
            await self.ws.close(CLOSE_TOO_MANY, f"more than {cap} chats open for this session")

    async def _keep_place(self, socket_id: str) -> None:
        """Renews the socket's lease while it is open; ends the socket once its session is
        revoked. A renewal Redis misses is only logged: the lease outlives two of them."""
        assert self.identity is not None
        while True:
            await asyncio.sleep(SOCKET_LEASE_SECONDS / 3)
            try:
                # Cancelled with its socket, even inside a Redis call (tasks.cancellable).
                hold = await cancellable(
                    self.channel.sessions.hold_socket(
                        redis_client(self.channel.redis_url), self.identity.address, socket_id
                    )
                )
                if self.conversation_id:
                    await cancellable(self._presence().opened(self.conversation_id, socket_id))
            except REDIS_FAILURES as error:
                logger.warning("web chat: socket lease not renewed: %s", type(error).__name__)
                continue
            if not hold.held:
                await self._refuse_place(hold)
                return

    def _presence(self) -> ChatPresence:
        return ChatPresence(redis_client(self.channel.redis_url))

    async def _release_place(self, socket_id: str) -> None:
        assert self.identity is not None
        try:
            await self.channel.sessions.release_socket(
                redis_client(self.channel.redis_url), self.identity.address, socket_id
            )
        except REDIS_FAILURES as error:
            logger.warning("web chat: socket place not released: %s", type(error).__name__)

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
            log.page(self.conversation_id, length, self.options.history_page_size)
        )
        limits = {
            "max_frame_bytes": MAX_FRAME_BYTES,
            "max_text_chars": MAX_TEXT_CHARS,
            "rate_limit_burst": self.options.rate_limit_burst,
            "rate_limit_per_second": self.options.rate_limit_per_second,
        }
        masked = self.identity.address.masked()
        await self.send(ready_frame(self.conversation_id, masked, limits, LABELS))
        await self.send(history_frame(messages, cursor, initial=True))
        return {message["id"] for message in messages}

    # -- tasks --------------------------------------------------------------------------------

    async def _pump_live(self, subscription: LiveSubscription, seen: Set[str]) -> None:
        while True:
            item = await subscription.queue.get()
            if isinstance(item, LiveFeedLost):
                raise item
            self.turn_channel = next_turn_channel(item, self.turn_channel)
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
            await self.send(message_frame(message))

    async def _read_frames(self, log: EventLog) -> None:
        while True:
            data = await self.ws.recv()
            if data is None:
                continue
            assert self.bucket is not None
            wait = await self.bucket.take()
            if wait:
                await self.error(
                    RATE_LIMITED,
                    "too many frames; this one was dropped",
                    frame_id(data),
                    retry_after=round(wait, 2),
                )
                continue
            try:
                frame = parse_frame(data)
            except BadFrame as error:
                await self.error(error.code, str(error), error.frame_id)
                continue
            if isinstance(frame, PingFrame):
                await self.send(pong_frame(frame.id))
            elif isinstance(frame, HistoryFrame):
                await self._send_older(log, frame)
            elif isinstance(frame, AuthFrame):
                await self.error(BAD_FRAME, "already authenticated")
            else:
                # One trace per customer message, as an HTTP webhook's request has.
                with tracing.span("omni_webchat.message", kind=tracing.SERVER):
                    await self._accept(frame)

    async def _send_older(self, log: EventLog, frame: HistoryFrame) -> None:
        try:
            messages, cursor, _ = await log.page(
                self.conversation_id, frame.before, frame.limit or self.options.history_page_size
            )
        except StateUnavailable:
            await self.error(STATE_UNAVAILABLE, "history could not be read", retry=True)
            return
        await self.send(history_frame(messages, cursor, initial=False))

    async def _accept(self, frame: TurnFrame) -> None:
        """Acknowledges a message once, however often it is resent; queues its turn. A button
        whose payload the bot did not offer is refused, unacknowledged. While the server
        drains, nothing is acknowledged (see the module's docstring)."""
        if self.channel.draining:
            logger.info(
                "web chat %s: message %s left unacknowledged (draining)",
                self.conversation_id,
                frame.id,
            )
            return
        if isinstance(frame, ButtonFrame):
            try:
                offered = await self._offered(frame.payload)
            except StateUnavailable as error:
                logger.error("web chat %s: offered buttons unread: %s", self.conversation_id, error)
                await self.error(
                    NOT_PROCESSED,
                    "your choice was not processed (conversation state unavailable); "
                    "please resend it",
                    frame.id,
                    retry=True,
                )
                return
            if not offered:
                await self.error(
                    BAD_FRAME,
                    "that choice was not offered in this conversation; please type your answer",
                    frame.id,
                )
                return
        if self.turns.full():
            await self.error(
                BUSY,
                "your message was not processed: too many messages are waiting; "
                "please send it again in a moment",
                frame.id,
                retry=True,
            )
            return
        assert self.identity is not None
        media: List[Dict[str, Any]] = []
        if isinstance(frame, TextFrame) and frame.attachments:
            try:
                media = await self._attachments(frame.attachments)
            except StateUnavailable as error:
                logger.error("web chat %s: attachments unread: %s", self.conversation_id, error)
                await self.error(
                    NOT_PROCESSED,
                    "your message was not processed (conversation state unavailable); "
                    "please resend it",
                    frame.id,
                    retry=True,
                )
                return
            if len(media) < len(frame.attachments):
                await self.error(
                    BAD_FRAME,
                    "an attachment was not found: upload it again, then send the message",
                    frame.id,
                )
                return
        try:
            turn = await self.turns.accept(
                self.conversation_id,
                frame,
                turn_payload(frame, str(self.identity.address), media),
            )
        except REDIS_FAILURES as error:
            logger.error("web chat %s: message not recorded: %s", self.conversation_id, error)
            await self.error(
                NOT_PROCESSED,
                "your message was not processed (conversation state unavailable); please resend it",
                frame.id,
                retry=True,
            )
            return
        if turn is None:
            await self.send(ack_frame(frame.id, duplicate=True))
            return
        _remember(self._own_client_ids, frame.id)
        await self.send(ack_frame(frame.id, duplicate=False))

    async def _attachments(self, upload_ids: List[str]) -> List[Dict[str, Any]]:
        """The ``media`` of this conversation's uploads ``upload_ids`` (a missing or another
        conversation's id is left out)."""
        store = UploadStore(redis_client(self.channel.redis_url))
        found = []
        for upload_id in upload_ids:
            upload = await _state(store.get(self.conversation_id, upload_id))
            if upload is not None:
                found.append(upload.media(f"{FILES_PATH}/{upload.upload_id}"))
        return found

    async def _offered(self, payload: str) -> bool:
        """Whether the bot offered a button with this payload in this conversation: on this
        socket (its own turn's replies arrive before Rasa stores them) or among the latest
        ``OFFER_LOOKBACK_MESSAGES`` stored messages (from any channel, tab or replica)."""
        if payload in self._offered_here:
            return True
        log = EventLog.of_agent(self.agent)
        length = await _state(log.length(self.conversation_id))
        messages, _, _ = await _state(
            log.page(self.conversation_id, length, OFFER_LOOKBACK_MESSAGES)
        )
        return any(
            button.get("payload") == payload
            for message in messages
            if message["role"] == "bot"
            for button in message.get("buttons") or ()
        )

    async def _run_turns(self) -> None:
        """The socket's worker, until the socket closed and its accepted turns are done (a
        drain settles it even once the socket is gone)."""
        self.channel.workers.add(self)
        try:
            await self.turns.work(self._turn)
        finally:
            self.channel.workers.discard(self)

    async def _turn(self, turn: AcceptedTurn) -> None:
        frame = turn.frame
        if not self.agent.is_ready():
            # Rasa would drop the message with only a log line while its model loads.
            await self.turns.forget(turn)
            await self.error(
                NOT_PROCESSED,
                "your message was not processed: the assistant is starting; please resend it",
                frame.id,
                retry=True,
            )
            return
        await self.send(typing_frame(True))
        try:
            # The socket's worker runs the turn: it continues the trace of the message's frame.
            with tracing.span("chat.turn", parent=tracing.context_of(turn.lease.traceparent)):
                processed = await run_chat_turn(self.agent, turn.lease, WebChatOutput(self))
            await self.turns.done(turn, {"processed": processed, "attempt": turn.lease.attempt})
        except TurnFailed as failure:
            logger.error("web chat %s: turn failed: %s", self.conversation_id, failure)
            if failure.before_processing:
                await self.turns.forget(turn)
            else:
                await self.turns.done(turn, {"error": failure.reason.split(":")[0]})
            await self.error(
                NOT_PROCESSED,
                "your message was not processed: "
                + ("please resend it" if failure.before_processing else "something went wrong")
                + f" ({failure.reason.split(':')[0]})",
                frame.id,
                retry=failure.before_processing,
            )
        except Exception:  # noqa: BLE001 - the customer must hear about any failure
            logger.exception("web chat %s: turn crashed", self.conversation_id)
            await self.turns.done(turn, {"error": "internal error"})
            await self.error(
                NOT_PROCESSED, "your message was not processed (internal error)", frame.id
            )
        finally:
            await self.send(typing_frame(False))


async def _state(pending: Awaitable[Any]) -> Any:
    """Awaits a read of conversation state, as StateUnavailable when Redis fails."""
    try:
        return await pending
    except REDIS_FAILURES as error:
        raise StateUnavailable(f"Redis unavailable ({type(error).__name__})") from error
