"""Delivering a notification: where it goes, sending it there once, and recording it in the
conversation.

Where (:meth:`NotificationCourier.route`): an open chat tab (:mod:`omnichannel.presence`) at
once; else, for a customer who reached us by phone (or whom the business's consent record
covers), the messaging channel they last wrote on (SMS or WhatsApp; outside WhatsApp's window
the response's approved template, :mod:`omnichannel.whatsapp_templates`); else the chat, queued:
the customer sees it the next time they open it.

The notification is rendered by Rasa's own response generator for that channel (``channel:``
variations apply) with its slots, and recorded in the conversation as the slots (``SlotSet``)
and the bot's message (``BotUttered``, metadata ``kind: notification``, ``outbound_id``), under
the conversation's lock, so the customer's reply continues with those slots ("when will it
arrive?" is about that order) and every open chat tab shows it live (the tracker store
publishes what it appends).

Once: a text is planned and the plan (rendered parts, addresses, the time sending began) kept
in the send's leased work item before Twilio is asked; a replica that takes the send over
(``lease.taken_over``) reads Twilio's records for those parts first
(:meth:`omnichannel.sms_sender.SmsSender.find_sent`) and sends only what is missing; the
conversation's record is written once, found by its ``outbound_id`` on a second run.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

from rasa.core.channels.channel import CollectingOutputChannel
from rasa.shared.core.events import BotUttered, SlotSet

from connectors.turns.run import processor_of
from omnichannel.channels import CHAT, MESSAGING_KINDS, OUTPUT_OF_KIND, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.leases import Lease
from omnichannel.outbound.gate import contacted_by_phone
from omnichannel.outbound.items import (
    FAILED,
    QUEUED,
    REFUSED,
    SCHEDULED,
    SENT,
    Delivered,
    OutboundItem,
    OutboundQueue,
)
from omnichannel.presence import ChatPresence
from omnichannel.redis_client import StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import SmsMessage
from omnichannel.sms_sender import (
    SmsOptedOut,
    SmsOutcomeUnknown,
    SmsRefused,
    SmsSender,
    SmsSendFailed,
    TwilioUnreachable,
    preferred_channel,
)
from omnichannel.whatsapp_templates import template_for

if TYPE_CHECKING:
    from rasa.core.agent import Agent
    from rasa.shared.core.domain import Domain

logger = logging.getLogger(__name__)

NOTIFICATION_KIND = "notification"
#: A send Twilio could not take is tried again this much later.
RETRY_SECONDS = 60.0
#: ... until this long after it was first due; then it is recorded failed.
GIVE_UP_SECONDS = 3600.0


def _part(message: SmsMessage) -> Dict[str, Any]:
    return {"body": message.body, "media_urls": list(message.media_urls), "params": message.params}


def _message(part: Mapping[str, Any]) -> SmsMessage:
    return SmsMessage(
        body=part["body"], media_urls=tuple(part["media_urls"]), params=part.get("params") or {}
    )


def domain_of(agent: Agent) -> Domain:
    """The loaded model's domain (a server without one is not ready)."""
    if agent.domain is None:
        raise StateUnavailable("the model is not loaded yet")
    return agent.domain


def sendable(agent: Agent, response: str) -> bool:
    """Whether designers marked ``response`` sendable (``metadata: {notification: true}`` on
    one of its variations in domain.yml)."""
    for variation in domain_of(agent).responses.get(response) or ():
        metadata = variation.get("metadata")
        if isinstance(metadata, dict) and metadata.get("notification") is True:
            return True
    return False


class NotificationCourier:
    """The ``notification`` kind's delivery (see the module's docstring)."""

    def __init__(
        self,
        agent: Callable[[], Agent],
        queue: OutboundQueue,
        sender: Callable[[], SmsSender],
        identity: Optional[IdentityStore] = None,
    ) -> None:
        self.agent = agent
        self.queue = queue
        self.sender = sender
        self.identity = identity or IdentityStore()
        self.presence = ChatPresence(self.identity.given)

    async def route(self, item: OutboundItem) -> str:
        cid = item.conversation_id
        if await self.presence.is_open(cid):
            return CHAT
        profile = await self.identity.profile(cid)
        if profile.phone and (contacted_by_phone(profile) or item.consent_record):
            return preferred_channel(profile)
        return CHAT

    async def deliver(self, item: OutboundItem, lease: Lease, channel: str) -> Delivered:
        agent = self.agent()
        rendered = await self._rendered(agent, item, channel)
        if channel in MESSAGING_KINDS:
            return await self._text(agent, item, lease, channel, rendered)
        await self._record(agent, item, channel, rendered, {})
        if await self.presence.is_open(item.conversation_id):
            return Delivered(SENT, CHAT, {"route": "live"})
        return Delivered(QUEUED, CHAT, {"route": "chat"}, reason="shown when the chat opens")

    # -- rendering ------------------------------------------------------------------------------

    async def _rendered(self, agent: Agent, item: OutboundItem, channel: str) -> Dict[str, Any]:
        """The response for ``channel`` with the notification's slots (Rasa's generator)."""
        processor = processor_of(agent)
        tracker = await processor.fetch_tracker_with_initial_session(
            item.conversation_id, CollectingOutputChannel(), {"channel": channel}
        )
        slots = item.payload.get("slots") or {}
        for name, value in slots.items():
            tracker.update(SlotSet(name, value))
        generated = await agent.nlg.generate(
            item.payload["response"], tracker, OUTPUT_OF_KIND[channel], **slots
        )
        return dict(generated or {})

    # -- by SMS or WhatsApp ---------------------------------------------------------------------

    async def _text(
        self,
        agent: Agent,
        item: OutboundItem,
        lease: Lease,
        channel: str,
        rendered: Dict[str, Any],
    ) -> Delivered:
        sender = self.sender()
        cid = item.conversation_id
        plan: Optional[Dict[str, Any]] = lease.payload.get("plan")
        try:
            if plan is None:
                plan = await self._plan(agent, sender, item, channel, rendered)
                if plan["route"] == "held":
                    await sender.hold(cid, [BotMessage.from_rasa(rendered)], plan["reason"])
                    await self._record(agent, item, WHATSAPP, rendered, {"route": "held"})
                    return Delivered(QUEUED, WHATSAPP, {"route": "held"}, reason=plan["reason"])
                # Kept before Twilio is asked: a takeover reconciles these parts.
                await self.queue.work.update(lease, {**lease.payload, "plan": plan})
            messages = [_message(part) for part in plan["parts"]]
            known: List[Optional[str]] = []
            if lease.taken_over:
                known = await sender.find_sent(plan["to"], plan["from"], messages, plan["since"])
            sids = await sender.send_rendered(
                cid,
                messages,
                to=plan["to"],
                from_number=plan["from"],
                known=known,
                since=plan["since"],
            )
        except SmsOptedOut:
            return Delivered(REFUSED, channel, reason="opted_out")
        except SmsRefused as refused:
            return Delivered(REFUSED, channel, reason=type(refused).__name__)
        except (SmsOutcomeUnknown, TwilioUnreachable) as error:
            due = item.due or time.time()
            if time.time() - due < GIVE_UP_SECONDS:
                logger.error("notification %s not sent yet (%s); retried", item.item_id, error)
                return Delivered(
                    SCHEDULED,
                    channel,
                    reason="vendor_unavailable",
                    retry_at=self.queue.clock() + RETRY_SECONDS,
                )
            return Delivered(FAILED, channel, {"sids": error.sent}, reason="vendor_unavailable")
        except SmsSendFailed as failed:
            logger.error("notification %s not sent: %s", item.item_id, failed)
            return Delivered(FAILED, channel, {"sids": failed.sent}, reason="send_failed")
        detail = {"route": plan["route"], "sids": sids}
        await self._record(agent, item, plan["channel"], rendered, detail)
        return Delivered(SENT, plan["channel"], detail)

    async def _plan(
        self,
        agent: Agent,
        sender: SmsSender,
        item: OutboundItem,
        channel: str,
        rendered: Dict[str, Any],
    ) -> Dict[str, Any]:
        values = {**(item.payload.get("slots") or {})}
        template = template_for(domain_of(agent).responses, item.payload["response"], values)
        planned = await sender.plan(
            item.conversation_id,
            [BotMessage.from_rasa(rendered)],
            channel=channel,
            template=template,
        )
        return {
            "channel": planned.channel,
            "route": planned.route,
            "reason": planned.reason,
            "to": planned.to,
            "from": planned.sender,
            "parts": [_part(m) for m in planned.messages],
            "since": time.time(),
        }

    # -- the conversation's record --------------------------------------------------------------

    async def _record(
        self,
        agent: Agent,
        item: OutboundItem,
        channel: str,
        rendered: Dict[str, Any],
        detail: Dict[str, Any],
    ) -> None:
        """Appends the slots and the message to the conversation, once (a second run finds
        its ``outbound_id``). A Redis failure is raised: the item is then retried."""
        cid = item.conversation_id
        async with agent.lock_store.lock(cid):
            processor = processor_of(agent)
            tracker = await processor.fetch_tracker_with_initial_session(
                cid, CollectingOutputChannel(), {"channel": channel}
            )
            for event in reversed(tracker.events):
                if (
                    isinstance(event, BotUttered)
                    and (event.metadata or {}).get("outbound_id") == item.item_id
                ):
                    return
            for name, value in (item.payload.get("slots") or {}).items():
                tracker.update(SlotSet(name, value))
            data = {k: v for k, v in rendered.items() if k not in ("text", "metadata")}
            tracker.update(
                BotUttered(
                    rendered.get("text"),
                    data,
                    {
                        "utter_action": item.payload["response"],
                        "channel": channel,
                        "kind": NOTIFICATION_KIND,
                        "outbound_id": item.item_id,
                        **({"route": detail["route"]} if "route" in detail else {}),
                    },
                )
            )
            await processor.save_tracker(tracker)
