"""Chat turns as durable in-flight work (issue 13): an acknowledged message is processed once,
even when the replica that acknowledged it dies.

A message frame is recorded as a ``chat_turn`` item (:mod:`omnichannel.leases`) of its
conversation, the client's id as the item id, *before* the ``ack``. Recording is also the dedupe:
an item that exists (running or done, kept ``client_message_id_ttl``) is a duplicate, so one place
decides. The socket that accepted it runs it (:mod:`connectors.webchat.connection`), its lease
renewed from acceptance to the end of the turn, so messages queued behind a long turn stay with
this replica while it lives.

Every run goes through :func:`connectors.turns.once.handle_once` with a message id made of the
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
from typing import Any, Callable, Dict, Optional

from rasa.core.channels.channel import OutputChannel, UserMessage

from connectors.turns.once import handle_once
from connectors.turns.run import TurnFailed, run_turn
from connectors.webchat.wire import ButtonFrame, TurnFrame
from omnichannel.channels import CHAT, WEBCHAT
from omnichannel.leases import InFlightWork, Lease
from omnichannel.redis_client import REDIS_FAILURES, redis_client

logger = logging.getLogger(__name__)

CHAT_TURN = "chat_turn"
#: How long a replica that took over one of a conversation's messages waits for the sweep to
#: take over the others the dead replica had accepted, so it can run them in their order.
TAKEOVER_GATHER_SECONDS = 0.5


def chat_turn_work(redis_url: str, keep_seconds: int) -> InFlightWork:
    """The fleet's chat turns; a done item is kept ``keep_seconds`` (the client id dedupe)."""
    return InFlightWork(redis_url, CHAT_TURN, keep_seconds=keep_seconds)


def turn_payload(frame: TurnFrame, address: str) -> Dict[str, Any]:
    """What any replica needs to run the message: the text Rasa gets (a button's payload, which
    only the bot's own offers pass as such), the metadata, and when it was accepted (the order
    a takeover keeps)."""
    metadata: Dict[str, Any] = {"channel": CHAT, "address": address, "client_message_id": frame.id}
    if isinstance(frame, ButtonFrame):
        if frame.title:
            metadata["button_title"] = frame.title
        text, button = frame.payload, True
    else:
        text, button = frame.text, False
    return {"text": text, "button": button, "metadata": metadata, "accepted": time.time()}


def message_id_of(conversation_id: str, client_id: str) -> str:
    """The UserMessage id of a chat message, the same on every run: a client id is unique only
    within its conversation (the widget makes it), so the conversation is part of it."""
    return f"{WEBCHAT}:{conversation_id}:{client_id}"


async def run_chat_turn(agent: Any, lease: Lease, output: OutputChannel) -> bool:
    """Runs the item's message through Rasa once (see the module); True when this run
    processed it, False when the event log held it already. Raises TurnFailed."""
    payload = lease.payload
    message = UserMessage(
        payload["text"],
        output,
        lease.conversation_id,
        input_channel=WEBCHAT,
        message_id=message_id_of(lease.conversation_id, lease.item_id),
        metadata=dict(payload["metadata"]),
    )
    processed = []

    async def once(message: UserMessage) -> None:
        processed.append(await handle_once(agent, message))

    await run_turn(agent, once, message, trusted_payload=bool(payload.get("button")))
    return bool(processed and processed[0])


async def forget(work: InFlightWork, lease: Lease) -> None:
    """Drops an item nothing of which was processed, so the client's resend is a new message (its
    index entry goes with the next sweep)."""
    try:
        key = work.item_key(lease.conversation_id, lease.item_id)
        await redis_client(work.redis_url).delete(key)
    except REDIS_FAILURES as error:
        logger.warning("web chat: could not drop %s: %s", lease.item_id, type(error).__name__)


async def complete(work: InFlightWork, lease: Lease, outcome: Dict[str, Any]) -> None:
    """Marks the item done; if Redis fails here, the lease lapses and a takeover finds the
    message in the event log and completes it."""
    try:
        await work.complete(lease, outcome)
    except REDIS_FAILURES as error:
        logger.warning("web chat: %s not marked done: %s", lease.item_id, type(error).__name__)


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
    """The ``chat_turn`` resume handler (``takeover().register(work, ChatTurnResumer(...))``).

    A conversation's messages taken over here run one at a time, oldest acceptance first: the
    sweep takes them one by one, so each first waits ``TAKEOVER_GATHER_SECONDS`` for the others.
    """

    def __init__(self, work: InFlightWork, agent_of: Callable[[], Optional[Any]]) -> None:
        self.work = work
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
            await complete(self.work, lease, {"error": failure.reason.split(":")[0]})
            return
        except Exception:  # noqa: BLE001 - run again, it would fail again: note it, end it
            logger.exception("web chat: taken-over %s crashed", lease.item_id)
            await complete(self.work, lease, {"error": "internal error"})
            return
        logger.info(
            "web chat: %s of %s %s after a takeover",
            lease.item_id,
            lease.conversation_id,
            "processed" if processed else "found processed",
        )
        await complete(self.work, lease, {"processed": processed, "attempt": lease.attempt})
