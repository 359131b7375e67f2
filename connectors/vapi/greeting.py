"""The first words of a call and the assistant's name, in the words of domain.yml.

VAPI asks for them (``assistant-request``) before the caller says anything, and waits 7.5 s at
most, so they are rendered here from the loaded model's responses (Rasa's NLG, in process: no
action server round trip):

- ``utter_greet`` (its ``channel: vapi`` variation): the greeting, as when the caller says hello;
- ``utter_welcome_back_sms`` / ``_whatsapp`` / ``_chat``, or their ``…_order`` forms when an
  order number is known (``{order_number}``): instead of the greeting, for a caller who texted,
  wrote on WhatsApp or chatted with us in the last week (rendered with the conversation's
  slots, so a variation can say more, e.g. that the photo they sent is with their refund);
- ``utter_assistant_name``: the assistant's name as VAPI shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Optional

from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.rasa_patches import install_loud_state_failures
from omnichannel.addresses import Address
from omnichannel.channels import CHAT, SMS, VAPI, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice
from omnichannel.tasks import retrieve_outcome

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

GREETING = "utter_greet"
ASSISTANT_NAME = "utter_assistant_name"
#: (channel kind of the caller's last contact, order number known) -> the greeting response.
WELCOME_BACK = {
    (SMS, False): "utter_welcome_back_sms",
    (SMS, True): "utter_welcome_back_sms_order",
    (CHAT, False): "utter_welcome_back_chat",
    (CHAT, True): "utter_welcome_back_chat_order",
    (WHATSAPP, False): "utter_welcome_back_whatsapp",
    (WHATSAPP, True): "utter_welcome_back_whatsapp_order",
}
#: How far back other-channel activity counts as "recent" for the personal greeting.
RECENT_ACTIVITY_SECONDS = 7 * 24 * 3600


async def response_text(
    agent: Agent, name: str, tracker: Optional[DialogueStateTracker], channel: str = VAPI
) -> str:
    """The response ``name`` as ``channel``'s output channel would get it ("" when the domain
    has none): its ``channel:`` variation if any, slots filled from ``tracker``."""
    domain = getattr(agent, "domain", None)
    if domain is None or name not in domain.responses:
        logger.error("domain.yml has no response %s: none is said", name)
        return ""
    if tracker is None:
        tracker = DialogueStateTracker(channel, domain.slots)
    message = await agent.nlg.generate(name, tracker, channel)
    return str((message or {}).get("text") or "")


class Greeter:
    """The first message of a call: personal when the caller was here recently."""

    def __init__(self, identity: IdentityStore, timeout: float) -> None:
        self.identity = identity
        #: VAPI gives assistant-request 7.5 s; the Redis reads get at most this.
        self.timeout = timeout

    async def assistant_name(self, agent: Agent) -> str:
        return await response_text(agent, ASSISTANT_NAME, None)

    async def greeting(self, agent: Agent, address: Optional[Address]) -> str:
        """The greeting, rendered for voice. Bounded by ``timeout``: when Redis is slow or
        down the caller still gets the generic greeting."""
        generic = render_voice([BotMessage(text=await response_text(agent, GREETING, None))])
        if address is None:
            return generic
        install_loud_state_failures(agent)
        reading = asyncio.ensure_future(self._personal(agent, address))
        done, _ = await asyncio.wait({reading}, timeout=self.timeout)
        if not done:
            # Not wait_for: it would wait for the cancelled read to unwind, and a hung Redis
            # connection can take its time doing that. The read is left to end on its own.
            reading.cancel()
            reading.add_done_callback(retrieve_outcome)
            logger.warning("greeting for %s: state read timed out", address.masked())
            return generic
        try:
            personal = reading.result()
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.warning("greeting for %s: state unavailable (%s)", address.masked(), error)
            return generic
        return personal or generic

    async def _personal(self, agent: Agent, address: Address) -> Optional[str]:
        conversation_id = await self.identity.lookup(address)
        if conversation_id is None:
            return None
        # The whole log: a turn's tracker holds only the last few turns (the store's window),
        # and the SMS or chat this greeting recalls may be older than those.
        tracker = await agent.tracker_store.retrieve_full_tracker(conversation_id)
        if tracker is None:
            return None
        now = time.time()
        last_other: Optional[str] = None
        for event in reversed(tracker.events):
            if not isinstance(event, UserUttered):
                continue
            if now - event.timestamp > RECENT_ACTIVITY_SECONDS:
                break
            channel = (event.metadata or {}).get("channel")
            if channel in (SMS, WHATSAPP, CHAT):
                last_other = channel
                break
        if last_other is None:
            return None
        name = WELCOME_BACK[(last_other, bool(tracker.get_slot("order_number")))]
        return render_voice([BotMessage(text=await response_text(agent, name, tracker))])
