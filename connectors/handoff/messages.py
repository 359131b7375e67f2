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
2. a message for SMS then goes into the SMS outbox (:mod:`connectors.twilio_sms.outbox`, the
   one way a reply is texted: opt-outs refused, rendered once, reconciled with Twilio's records
   before any resend), under an id derived from the message's, so a takeover that finds it
   there already leaves it to the outbox's own lease and sweeper.

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
from omnichannel.channels import CHAT, SMS
from omnichannel.identity import IdentityStore
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.redis_client import REDIS_FAILURES, redis_client
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import SMS_MAX_LENGTH, SmsMessage, render_sms
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


def outbox_id(message_id: str) -> str:
    """The SMS outbox item of a hand-off message."""
    return f"handoff-{message_id}"


def sms_parts(event: BotUttered, max_length: int = SMS_MAX_LENGTH) -> List[SmsMessage]:
    """The SMS a logged message is texted as (the SMS renderer's form, the agent's name first)."""
    return list(render_sms([BotMessage.from_rasa(event.message())], max_length).messages)


def _part(message: SmsMessage) -> Dict[str, Any]:
    return {"body": message.body, "media_urls": list(message.media_urls)}


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
        if channel not in (SMS, CHAT):
            raise ValueError(f"hand-off messages go by SMS or chat, not {channel!r}")
        if channel == SMS and self.outbox is None:
            raise ValueError("SMS is not set up")
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
                "sms": [_part(part) for part in sms_parts(event)] if channel == SMS else [],
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
        """Logs the message once and, for SMS, hands it to the SMS outbox once; then completes
        the item. Also the sweeper's handler for items a replica left (the caller renews)."""
        payload = lease.payload
        conversation_id = lease.conversation_id
        event = BotUttered._from_parameters(payload["event"])
        await self._log_once(conversation_id, lease.item_id, event, int(payload["log_from"]))
        outcome: Dict[str, Any] = {"logged": True}
        if payload["channel"] == SMS:
            outcome["sms"] = await self._text(lease, payload)
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

    async def _text(self, lease: Lease, payload: Dict[str, Any]) -> str:
        """Puts the SMS in the outbox (once) and, when this attempt did, sends it here."""
        assert self.outbox is not None
        identity = IdentityStore(redis_client(self.redis_url))
        profile = await identity.profile(lease.conversation_id)
        if not profile.phone:
            logger.warning("hand-off message %s: no phone on file", lease.item_id)
            return "no phone on file"
        parts = [
            SmsMessage(body=part["body"], media_urls=tuple(part["media_urls"]))
            for part in payload["sms"]
        ]
        reply = await self.outbox.post(
            lease.conversation_id, outbox_id(lease.item_id), parts, profile.phone, None
        )
        if reply is None:
            return "in the SMS outbox"
        async with self.outbox.work.held(reply):
            await self.outbox.deliver(reply)
        return "delivered to the SMS outbox"

    async def status(self, conversation_id: str, message_id: str) -> Dict[str, Any]:
        """Where a message stands, for agents' pages: ``sending``, ``sent`` (logged; for SMS,
        accepted by Twilio) or ``not_sent`` with the reason (an opt-out, a failure)."""
        item = await self.work.state(conversation_id, message_id)
        if not item:
            return {"state": NOT_SENT, "reason": "unknown message"}
        if item.get("state") != "done":
            return {"state": SENDING}
        if "sms" not in json.loads(item.get("outcome") or "{}"):
            return {"state": SENT}
        sms = await InFlightWork(self.redis_url, SMS_OUTBOX).state(
            conversation_id, outbox_id(message_id)
        )
        if not sms:
            return {"state": NOT_SENT, "reason": "no phone on file"}
        if sms.get("state") != "done":
            return {"state": SENDING}
        outcome = json.loads(sms.get("outcome") or "{}")
        if outcome.get("sids") and not outcome.get("failed"):
            return {"state": SENT}
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
