"""Chat turns as durable in-flight work: an acknowledged message is processed once,
even when the replica that acknowledged it dies. The durable turn of
:mod:`connectors.turns.durable`, with the chat's wire (a frame's text or button payload) and
delivery (the socket, or the live feed once the socket is gone).

A message frame is recorded as a ``chat_turn`` item (:mod:`omnichannel.leases`) of its
conversation, the client's id as the item id, *before* the ``ack``. Recording is also the dedupe:
an item that exists (running or done, kept ``client_message_id_ttl``) is a duplicate, so one place
decides. The socket that accepted it runs it (:mod:`connectors.webchat.connection`), its lease
renewed from acceptance to the end of the turn, so messages queued behind a long turn stay with
this replica while it lives.

Every run goes through :func:`connectors.turns.once.run_once` with a message id made of the
conversation and the client id: a second run finds the message in the event log and does
nothing. If the replica dies, another one's sweeper takes the item over and :class:`ChatTurnResumer`
runs it with :class:`SilentOutput`: the replies reach the customer's open tabs on any replica
through the live feed (the tracker store publishes every stored event) and stay in the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Mapping, Optional, Sequence

from rasa.core.channels.channel import OutputChannel

from connectors.turns.durable import DurableTurns, leased_message
from connectors.turns.once import run_once
from connectors.turns.run import TurnFailed
from connectors.webchat.wire import ButtonFrame, TurnFrame
from omnichannel.channels import CHAT, WEBCHAT
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.media import PICTURE_INTENT, intent_for
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.tasks import BackgroundTasks

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

CHAT_TURN = "chat_turn"
#: Accepted messages of one socket waiting for their turn: more are refused (not acknowledged)
#: rather than queued without bound, as each would still run after the tab closed.
MAX_PENDING_TURNS = 20
#: How long a replica that took over one of a conversation's messages waits for the sweep to
#: take over the others the dead replica had accepted, so it can run them in their order.
TAKEOVER_GATHER_SECONDS = 0.5


def chat_turns(redis_url: str, keep_seconds: int) -> DurableTurns:
    """The fleet's chat turns; a done item is kept ``keep_seconds`` (the client id dedupe)."""
    return DurableTurns(InFlightWork(redis_url, CHAT_TURN, keep_seconds=keep_seconds), CHAT)


def turn_payload(
    frame: TurnFrame, address: str, media: Sequence[Mapping[str, Any]] = ()
) -> Dict[str, Any]:
    """What any replica needs to run the message: the text Rasa gets (a button's payload, which
    only the bot's own offers pass as such; for files alone, the intent they stand for), the
    metadata (with the files' ``media``, omnichannel/media.py), and when it was accepted (the
    order a takeover keeps)."""
    metadata: Dict[str, Any] = {"channel": CHAT, "address": address, "client_message_id": frame.id}
    if isinstance(frame, ButtonFrame):
        if frame.title:
            metadata["button_title"] = frame.title
        text, button = frame.payload, True
    else:
        text, button = frame.text, False
        if media:
            metadata["media"] = [dict(item) for item in media]
            if not text.strip():
                text, button = intent_for(media, False) or PICTURE_INTENT, True
    return {"text": text, "button": button, "metadata": metadata, "accepted": time.time()}


def message_id_of(conversation_id: str, client_id: str) -> str:
    """The UserMessage id of a chat message, the same on every run: a client id is unique only
    within its conversation (the widget makes it), so the conversation is part of it."""
    return f"{WEBCHAT}:{conversation_id}:{client_id}"


async def run_chat_turn(agent: Agent, lease: Lease, output: OutputChannel) -> bool:
    """Runs the item's message through Rasa once (see the module); True when this run
    processed it, False when the event log held it already. Raises TurnFailed."""
    message_id = message_id_of(lease.conversation_id, lease.item_id)
    message = leased_message(lease, output, WEBCHAT, message_id)
    return await run_once(agent, message, trusted_payload=bool(lease.payload.get("button")))


class SilentOutput(OutputChannel):
    """The output of a taken-over turn: it sends nothing itself (the socket that accepted the
    message is gone; the live feed brings the replies to every open tab). Named ``webchat`` so
    Rasa picks the same response variations as on the socket."""

    @classmethod
    def name(cls) -> str:
        return WEBCHAT

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        return None


@dataclass
class _Conversation:
    """The taken-over messages of one conversation waiting on this replica."""

    #: item id → when it was accepted.
    waiting: Dict[str, float] = field(default_factory=dict)
    running: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def is_next(self, item_id: str) -> bool:
        return not self.running and min(self.waiting, key=lambda i: (self.waiting[i], i)) == item_id


class ChatTurnResumer:
    """The ``chat_turn`` resume handler (``turns.resume_with(ChatTurnResumer(turns, ...))``).

    A conversation's messages taken over here run one at a time, oldest acceptance first: the
    sweep takes them one by one, so each first waits ``TAKEOVER_GATHER_SECONDS`` for the others.
    """

    def __init__(self, turns: DurableTurns, agent_of: Callable[[], Optional[Agent]]) -> None:
        self.turns = turns
        #: Rasa's current agent (a model reload replaces it).
        self.agent_of = agent_of
        self._conversations: Dict[str, _Conversation] = {}

    async def __call__(self, lease: Lease) -> None:
        conversation = self._conversations.setdefault(lease.conversation_id, _Conversation())
        conversation.waiting[lease.item_id] = float(lease.payload.get("accepted", 0))
        try:
            await asyncio.sleep(TAKEOVER_GATHER_SECONDS)
            async with conversation.changed:
                await conversation.changed.wait_for(lambda: conversation.is_next(lease.item_id))
                conversation.running = True
            try:
                await self.resume(lease)
            finally:
                conversation.running = False
        finally:
            del conversation.waiting[lease.item_id]
            async with conversation.changed:
                conversation.changed.notify_all()
            if not conversation.waiting:
                self._conversations.pop(lease.conversation_id, None)

    async def resume(self, lease: Lease) -> None:
        """Runs one taken-over message and completes it. Left running (the lease lapses and a
        sweep tries again) only when nothing was processed: the model is not loaded yet, or
        the conversation stayed locked."""
        agent = self.agent_of()
        if agent is None or not agent.is_ready():
            logger.warning("web chat: %s taken over before the model loaded", lease.item_id)
            return
        try:
            processed = await run_chat_turn(agent, lease, SilentOutput())
        except TurnFailed as failure:
            if failure.before_processing:
                logger.warning("web chat: taken-over %s not run: %s", lease.item_id, failure)
                return
            logger.error("web chat: taken-over %s failed: %s", lease.item_id, failure)
            await self.turns.complete(lease, {"error": failure.reason.split(":")[0]})
            return
        except Exception:  # noqa: BLE001 - run again, it would fail again: note it, end it
            logger.exception("web chat: taken-over %s crashed", lease.item_id)
            await self.turns.complete(lease, {"error": "internal error"})
            return
        logger.info(
            "web chat: %s of %s %s after a takeover",
            lease.item_id,
            lease.conversation_id,
            "processed" if processed else "found processed",
        )
        await self.turns.complete(lease, {"processed": processed, "attempt": lease.attempt})


@dataclass(eq=False)
class AcceptedTurn:
    """A message a socket acknowledged, held (its lease renewed) until it is done."""

    frame: TurnFrame
    lease: Lease
    #: Another replica took it over (this one could not renew the lease in time): not run here.
    lost: bool = False


class SocketTurns:
    """The messages one socket accepted, from their ``ack`` until each is done.

    Each is recorded before it is acknowledged, then queued for the socket's worker, which runs
    them one after another and outlives the socket (a message acknowledged is processed even if
    the tab closes). Their leases are renewed together, queued or running, so they lapse
    together and one sweep of another replica takes them all, in order; at a drain's bound they
    are handed off at once (:meth:`hand_off`).
    """

    def __init__(self, durable: DurableTurns, renewals: BackgroundTasks) -> None:
        self.durable = durable
        #: Where the lease renewals run (they outlive the socket too).
        self.renewals = renewals
        self.conversation_id = ""
        self.queue: asyncio.Queue[Optional[AcceptedTurn]] = asyncio.Queue()
        #: Accepted and not done yet (queued or running), by client id, in acceptance order.
        self.accepted: Dict[str, AcceptedTurn] = {}
        self._renewer: Optional[asyncio.Task] = None
        self.handed_off = False

    def full(self) -> bool:
        return self.queue.qsize() >= MAX_PENDING_TURNS

    async def accept(
        self, conversation_id: str, frame: TurnFrame, payload: Dict[str, Any]
    ) -> Optional[AcceptedTurn]:
        """Records the message and queues its turn; None when it was accepted before (a resend).
        Raises a Redis failure: the message must then not be acknowledged."""
        recorded = await self.durable.accept(conversation_id, frame.id, payload)
        if isinstance(recorded, Existing):
            return None
        self.conversation_id = conversation_id
        turn = AcceptedTurn(frame, recorded)
        self.accepted[frame.id] = turn
        if self._renewer is None or self._renewer.done():
            self._renewer = self.renewals.start(
                self._renew_leases(), f"leases of chat {conversation_id}"
            )
        self.queue.put_nowait(turn)
        return turn

    async def work(self, run: Callable[[AcceptedTurn], Awaitable[None]]) -> None:
        """The socket's worker: runs the queued turns until :meth:`stop` (a turn another
        replica took over, or every turn after a hand-off, is left to the fleet)."""
        while True:
            turn = await self.queue.get()
            try:
                if turn is None:
                    return
                if turn.lost:
                    logger.info("web chat: %s runs on the replica that took it", turn.frame.id)
                elif not self.handed_off:
                    await run(turn)
            finally:
                self.queue.task_done()  # a drain's settle waits for these

    def stop(self) -> None:
        """The worker stops once the turns accepted before are done."""
        self.queue.put_nowait(None)

    async def done(self, turn: AcceptedTurn, outcome: Dict[str, Any]) -> None:
        self.accepted.pop(turn.frame.id, None)
        await self.durable.complete(turn.lease, outcome)

    async def forget(self, turn: AcceptedTurn) -> None:
        """Nothing of the message was processed and the client is told to resend it: the
        record goes, so the resend is a new message."""
        self.accepted.pop(turn.frame.id, None)
        await self.durable.forget(turn.lease)

    async def _renew_leases(self) -> None:
        """Renews the leases of every accepted message not done yet, all in one pass, until
        none is left (:meth:`accept` starts it again)."""
        work = self.durable.work
        while self.accepted:
            await asyncio.sleep(work.lease_seconds / 3)
            for turn in list(self.accepted.values()):
                try:
                    renewed = await work.renew(turn.lease)
                except REDIS_FAILURES as error:
                    # A lease outlives two missed renewals; the next pass may succeed.
                    logger.warning("web chat: leases not renewed: %s", type(error).__name__)
                    break
                if not renewed and self.accepted.pop(turn.frame.id, None) is not None:
                    turn.lost = True
                    logger.warning(
                        "web chat %s: message %s taken over by another replica",
                        self.conversation_id,
                        turn.frame.id,
                    )

    async def hand_off(self) -> int:
        """Hands every accepted message not done yet to the fleet (for a drain at its bound):
        their leases end now, so another replica's next sweep takes them over; a message whose
        turn still runs here is found processed there if it finishes first. Returns how many."""
        self.handed_off = True
        if self._renewer is not None:
            self._renewer.cancel()  # a renewal after the release would take the work back
            await asyncio.gather(self._renewer, return_exceptions=True)
        turns = list(self.accepted.values())
        self.accepted.clear()
        # One not released (Redis failed) is not renewed any more: its lease lapses instead.
        return await self.durable.release([(self.durable.work, turn.lease) for turn in turns])
