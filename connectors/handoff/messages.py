"""Messages to a customer while a person holds (or is about to hold) their conversation: an
agent's replies, and the hand-off's own notices (still waiting, given up, handed back).

Each is durable work (:mod:`omnichannel.leases`, kind ``handoff_message``, item id = the
message's id: the agent's page names it, so a resent reply is the same reply), recorded before
it is acknowledged and carried out by whichever replica holds its lease:

1. it is logged in the conversation's event log as a ``BotUttered`` marked with its id (and,
   for an agent's reply, ``metadata.agent``: who wrote it), unless a previous attempt logged it
   already (the log after the length noted at acceptance is searched for the id). Logging is
   what reaches the web chat: the tracker store publishes every appended event on the
   conversation's live channel, which every open chat tab, on any replica, shows at once
   (:mod:`connectors.webchat.live`), and the history shows it to a tab opened later;
2. a message for SMS or WhatsApp then takes the one sending path: the sender's plan
   (:meth:`omnichannel.sms_sender.SmsSender.plan`: opt-outs refused, rendered by the channel's
   renderer, WhatsApp in its 24-hour window or else held until the customer writes there
   again), then the SMS outbox (:mod:`connectors.twilio_sms.outbox`: recorded, reconciled with
   Twilio's records before any resend), under an id derived from the message's, so a takeover
   that finds it there already leaves it to the outbox's own lease and sweeper.

A replica killed at any point leaves the item to another replica, which repeats only what is
missing: the customer gets each message once, and the log holds it once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from rasa.shared.core.events import BotUttered

from connectors.event_log.reading import event_log_of
from connectors.handoff import bot
from connectors.twilio_sms.outbox import SMS_OUTBOX, SmsOutbox
from omnichannel import metrics
from omnichannel.channels import CHAT, MESSAGING_KINDS
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.rendering.messages import BotMessage
from omnichannel.sms_sender import SmsRefused, SmsSendFailed
from omnichannel.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

HANDOFF_MESSAGE = "handoff_message"
#: The key, in a logged message's metadata, of its id.
MESSAGE_ID = "handoff_message_id"
#: How long a message's record (and so its outcome, and the dedupe of a resend) is kept.
KEEP_SECONDS = 7 * 24 * 3600

#: Delivery states an agent's page shows.
SENDING = "sending"
SENT = "sent"
NOT_SENT = "not_sent"
#: WhatsApp outside its window: sent when the customer next writes there.
HELD = "held"


def outbox_id(message_id: str) -> str:
    """The SMS outbox item of a hand-off message."""
    return f"handoff-{message_id}"


class CustomerMessages:
    """The ``handoff_message`` items: recorded by the engine, carried out here."""

    def __init__(
        self,
        redis_url: str,
        agent: Callable[[], Any],
        outbox: Optional[SmsOutbox],
        announce: Callable[..., Awaitable[None]],
        **work_options: Any,
    ) -> None:
        """``announce(conversation_id, event, **details)`` tells agents' pages how a message
        went (:meth:`omnichannel.handoff.store.HandoffStore.announce`)."""
        self.redis_url = redis_url
        self.agent = agent
        self.outbox = outbox
        self.announce = announce
        self.work = InFlightWork(
            redis_url, HANDOFF_MESSAGE, **{"keep_seconds": KEEP_SECONDS, **work_options}
        )
        self.deliveries = BackgroundTasks("hand-off messages")

    async def send(
        self, conversation_id: str, message_id: str, channel: str, event: BotUttered
    ) -> bool:
        """Records the message (before the caller acknowledges it) and delivers it in the
        background; False when a message with this id was recorded already (a resend: nothing
        new is sent). Raises a Redis failure when it cannot be recorded: it is then not
        accepted."""
        if channel not in (*MESSAGING_KINDS, CHAT):
            raise ValueError(f"hand-off messages go by SMS, WhatsApp or chat, not {channel!r}")
        if channel in MESSAGING_KINDS and self.outbox is None:
            raise ValueError("Twilio is not set up")
        event.metadata = {**event.metadata, MESSAGE_ID: message_id, "channel": channel}
        log_from = await event_log_of(self.agent(), "hand-off messages").event_count(
            conversation_id
        )
        recorded = await self.work.record(
            conversation_id,
            message_id,
            {
                "channel": channel,
                "event": event.as_dict(),
                "log_from": log_from,
                "since": time.time(),
            },
        )
        if isinstance(recorded, Existing):
            return False
        self.deliveries.start(self._held(recorded), f"message {message_id}")
        return True

    async def _held(self, lease: Lease) -> None:
        async with self.work.held(lease):
            await self.deliver(lease)

    async def deliver(self, lease: Lease) -> None:
        """Logs the message once and, for SMS or WhatsApp, sends it once; then completes
        the item. Also the sweeper's handler for items a replica left (the caller renews)."""
        payload = lease.payload
        conversation_id = lease.conversation_id
        event = BotUttered._from_parameters(payload["event"])
        await self._log_once(conversation_id, lease.item_id, event, int(payload["log_from"]))
        outcome: Dict[str, Any] = {"logged": True}
        if payload["channel"] in MESSAGING_KINDS:
            outcome["sent"] = await self._send(lease, event, payload["channel"])
        if not await self.work.complete(lease, outcome):
            logger.warning("hand-off message %s: completed by another replica", lease.item_id)
            return
        try:
            status = await self.status(conversation_id, lease.item_id)
            await self.announce(
                conversation_id, "handoff_message", message_id=lease.item_id, status=status
            )
        except REDIS_FAILURES as error:
            logger.warning("hand-off message %s: status not announced: %s", lease.item_id, error)

    async def _log_once(
        self, conversation_id: str, message_id: str, event: BotUttered, log_from: int
    ) -> None:
        agent = self.agent()
        log = event_log_of(agent, "hand-off messages")
        async with agent.lock_store.lock(conversation_id):
            for logged in await log.read_events(conversation_id, log_from, -1):
                if (logged.get("metadata") or {}).get(MESSAGE_ID) == message_id:
                    return
            await bot.append(agent, conversation_id, [event])

    async def _send(self, lease: Lease, event: BotUttered, channel: str) -> Dict[str, Any]:
        """Plans the message on its messaging channel and puts it in the SMS outbox (once), or
        holds it for WhatsApp; when this attempt posted it, sends it here. Returns the route
        (or why it was not sent)."""
        assert self.outbox is not None
        sender = self.outbox.sender()
        message = BotMessage.from_rasa(event.message())
        try:
            plan = await sender.plan(lease.conversation_id, [message], channel=channel)
        except (SmsRefused, SmsSendFailed) as error:
            logger.warning("hand-off message %s not sent: %s", lease.item_id, error)
            return {"refused": str(error)}
        if plan.route == metrics.ROUTE_HELD:
            if not (lease.taken_over and await self._held_already(lease, message)):
                await sender.hold(lease.conversation_id, [message], str(plan.reason))
            return {"route": plan.route, "reason": plan.reason}
        reply = await self.outbox.post(
            lease.conversation_id,
            outbox_id(lease.item_id),
            plan.messages,
            str(plan.to),
            plan.sender,
        )
        if reply is not None:
            plan.sent(())
            async with self.outbox.work.held(reply):
                await self.outbox.deliver(reply)
        return {"route": plan.route, "channel": plan.channel, "reason": plan.reason}

    async def _held_already(self, lease: Lease, message: BotMessage) -> bool:
        """Whether a replica that died holding ``lease`` had held ``message`` for WhatsApp
        already (held since the item was recorded): a takeover then does not hold it twice."""
        assert self.outbox is not None
        wanted = message.as_dict()
        for entry in await self.outbox.sender().whatsapp.held(lease.conversation_id):
            if entry.get("at", 0) >= lease.payload["since"] and entry.get("messages") == [wanted]:
                return True
        return False

    async def route(
        self, conversation_id: str, channel: str, message: BotMessage
    ) -> Dict[str, Any]:
        """How ``message`` would go on ``channel`` now, for an agent's preview: the sender's
        plan (nothing sent, nothing recorded) as ``route`` and ``reason`` (e.g. ``held``,
        "outside WhatsApp's 24-hour window"), ``refused`` with the reason, or nothing for the
        chat (or when it cannot be told now)."""
        if channel not in MESSAGING_KINDS or self.outbox is None:
            return {}
        try:
            plan = await self.outbox.sender().plan(conversation_id, [message], channel=channel)
        except (SmsRefused, SmsSendFailed) as error:
            return {"refused": str(error)}
        except REDIS_FAILURES:
            return {}
        return {"route": plan.route, "reason": plan.reason}

    async def status(self, conversation_id: str, message_id: str) -> Dict[str, Any]:
        """Where a message stands, for agents' pages: ``sending``, ``sent`` (logged; for SMS
        and WhatsApp, accepted by Twilio; with a reason when it went otherwise than asked),
        ``held`` (WhatsApp, outside its window) or ``not_sent`` with the reason (an opt-out, a
        failure)."""
        item = await self.work.state(conversation_id, message_id)
        if not item:
            return {"state": NOT_SENT, "reason": "unknown message"}
        if item.get("state") != "done":
            return {"state": SENDING}
        sent = json.loads(item.get("outcome") or "{}").get("sent")
        if not isinstance(sent, dict):
            return {"state": SENT}  # logged: shown in the chat
        if sent.get("refused"):
            return {"state": NOT_SENT, "reason": sent["refused"]}
        if sent.get("route") == metrics.ROUTE_HELD:
            return {
                "state": HELD,
                "reason": "sent when the customer next writes on WhatsApp "
                f"({sent.get('reason') or 'outside its 24-hour window'})",
            }
        # Sent otherwise than asked: by SMS outside WhatsApp's window, or as its template.
        how = (
            {"reason": f"by SMS ({sent['reason']})"}
            if sent.get("route") == metrics.ROUTE_SMS_FALLBACK
            else {"reason": str(sent["reason"])}
            if sent.get("route") == metrics.ROUTE_TEMPLATE and sent.get("reason")
            else {}
        )
        sms = await InFlightWork(self.redis_url, SMS_OUTBOX).state(
            conversation_id, outbox_id(message_id)
        )
        if not sms:
            return {"state": NOT_SENT, "reason": "not in the outbox"}
        if sms.get("state") != "done":
            return {"state": SENDING}
        outcome = json.loads(sms.get("outcome") or "{}")
        if outcome.get("sids") and not outcome.get("failed"):
            return {"state": SENT, **how}
        return {"state": NOT_SENT, "reason": outcome.get("refused") or outcome.get("failed") or ""}

    async def statuses(self, conversation_id: str, message_ids: List[str]) -> Dict[str, Any]:
        """:meth:`status` of each message; ``sending`` for any Redis cannot tell now."""
        found: Dict[str, Any] = {}
        for message_id in message_ids:
            try:
                found[message_id] = await self.status(conversation_id, message_id)
            except REDIS_FAILURES:
                found[message_id] = {"state": SENDING}
        return found
