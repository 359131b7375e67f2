"""Hand-off to a person: the bot asks for one and says only what will really happen.

``action_handoff_to_human`` runs when a customer asks for a person (the ``talk_to_human``
rules), when the LLM fallback gives up (it follows up with this action), or from any rule a
designer writes. What it does depends on what the system can keep:

- **on a call, with a support line** (``HANDOFF_PHONE_NUMBER``): a warm transfer through VAPI
  (its ``transferPlan``; mode ``HANDOFF_TRANSFER_MODE``), whose summary for the person who
  answers is generated from the call's transcript plus what the conversation knows from other
  channels (texts, chats, the order number); recorded as a ``transferred`` hand-off;
- **otherwise** the conversation is queued for the team (``omnichannel.handoff.store``) and
  the bot stands aside (``ConversationPaused``; connectors/handoff/ takes it from there), but
  only when a person can answer: some replica serves a desk (the inbox, a helpdesk) and the
  customer can be reached by SMS, WhatsApp or chat (:mod:`omnichannel.handoff.reach`). The
  customer hears where the answer will come (here, by text, in the chat), and, out of the
  team's hours, when the team is back. A caller hears that a person will text them (or
  answer in the chat), and the call ends: the hand-off carries the call's transcript (the
  end-of-call report);
- when nobody can answer, the customer is told so plainly, and the bot carries on.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import current_channel
from omnichannel.channels import CHAT, LABELS, VOICE, kind_of_event
from omnichannel.handoff.reach import reach
from omnichannel.handoff.state import ASSISTANT_GAVE_UP, CUSTOMER_ASKED, Handoff
from omnichannel.handoff.store import HandoffStore
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.settings import Settings, load_settings

logger = logging.getLogger(__name__)

LLM_FALLBACK = "action_llm_fallback"
#: What the person answering the transferred call is told, besides the call's transcript.
SUMMARY_INSTRUCTIONS = (
    "You brief a support agent who is about to take a phone call from a customer of Acme Shop. "
    "In two or three short spoken sentences, say who is calling if known, what they want and "
    "what has been done so far. Use the call transcript and the earlier contacts below."
)
#: The most of the earlier conversation put in the transfer summary's instructions.
MAX_CONTEXT_TURNS = 8
MAX_CONTEXT_CHARS = 1500


def earlier_contacts(tracker: Tracker) -> str:
    """The customer's recent messages on other channels than this call, and the order they
    named: the part of the conversation VAPI's transcript of the call does not have."""
    lines: List[str] = []
    for event in tracker.events:
        if event.get("event") != "user" or not event.get("text"):
            continue
        channel = kind_of_event(event)
        if channel and channel != VOICE and not str(event["text"]).startswith("/"):
            lines.append(f"- by {LABELS[channel]}: {event['text']}")
    lines = lines[-MAX_CONTEXT_TURNS:]
    order = tracker.get_slot("order_number")
    if order:
        lines.append(f"- the order they are asking about: {order}")
    text = "\n".join(lines) if lines else "- none"
    return text[-MAX_CONTEXT_CHARS:]


def transfer_plan(mode: str, tracker: Tracker) -> Dict[str, Any]:
    """VAPI's ``transferPlan`` for the support line (docs/specs/vapi-outbound-and-transfer.md)."""
    plan: Dict[str, Any] = {"mode": mode}
    if "summary" in mode:
        plan["summaryPlan"] = {
            "enabled": True,
            "messages": [
                {
                    "role": "system",
                    "content": f"{SUMMARY_INSTRUCTIONS}\nEarlier contacts:\n"
                    + earlier_contacts(tracker),
                },
                {"role": "user", "content": "Here is the transcript:\n\n{{transcript}}\n\n"},
            ],
        }
    return plan


def reason_of(tracker: Tracker) -> str:
    """Why the hand-off is asked for: the LLM fallback gave up, or the customer asked."""
    return ASSISTANT_GAVE_UP if tracker.latest_action_name == LLM_FALLBACK else CUSTOMER_ASKED


class ActionHandoffToHuman(Action):
    """See the module docstring."""

    def name(self) -> str:
        return "action_handoff_to_human"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        settings = load_settings()
        channel = current_channel(tracker)
        store = HandoffStore(settings.redis_url)
        if channel == VOICE and settings.handoff_phone_number:
            return await self._transfer(dispatcher, tracker, settings, store)
        now = time.time()
        if not await store.desks_alive(now):
            logger.warning("hand-off of %s: no agent desk is served", tracker.sender_id)
            dispatcher.utter_message(response="utter_handoff_unavailable")
            return []
        profile = await IdentityStore().profile(tracker.sender_id)
        found = reach(profile, settings, channel)
        if not found.reachable:
            dispatcher.utter_message(response="utter_handoff_unreachable")
            return []
        notice_at, give_up_at = settings.handoff_waiting.deadlines(now)
        handoff, _ = await store.request(
            Handoff.requested(
                tracker.sender_id,
                channel,
                reason_of(tracker),
                now,
                notice_at=notice_at,
                give_up_at=give_up_at,
            )
        )
        back = settings.handoff_waiting.reopens(now)
        if back is not None:
            dispatcher.utter_message(
                response="utter_handoff_team_away",
                handoff_back=settings.handoff_waiting.hours.describe(back, now),
            )
        dispatcher.utter_message(response=self._queued_response(channel, found.default))
        logger.info("hand-off %s of %s queued (%s)", handoff.id, tracker.sender_id, channel)
        # Marked, so the viewer and the inbox tell why the bot stood aside.
        return [{**ConversationPaused(), "metadata": {"handoff": {"event": "requested"}}}]

    @staticmethod
    def _queued_response(channel: str, answered_on: Optional[str]) -> str:
        """The customer hears where the answer will come."""
        if channel == VOICE:
            return (
                "utter_handoff_queued_call_chat"
                if answered_on == CHAT
                else ("utter_handoff_queued_call")
            )
        if answered_on == channel:
            return "utter_handoff_queued"
        return (
            "utter_handoff_queued_in_chat" if answered_on == CHAT else "utter_handoff_queued_by_sms"
        )

    async def _transfer(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        settings: Settings,
        store: HandoffStore,
    ) -> List[EventType]:
        line = settings.handoff_phone_number or ""
        try:
            await store.request(
                Handoff.transferred(tracker.sender_id, VOICE, reason_of(tracker), time.time(), line)
            )
        except REDIS_FAILURES as error:
            # The caller still gets through; only the record of it is missing.
            logger.error("transfer of %s not recorded: %s", tracker.sender_id, error)
        dispatcher.utter_message(
            response="utter_handoff_transfer",
            json_message={
                "call_control": "transfer",
                "destination": line,
                "content": "Transferring you now.",
                "transfer_plan": transfer_plan(settings.handoff_transfer_mode, tracker),
            },
        )
        return []
