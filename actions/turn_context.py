"""The dialogue state of each user turn, read from the message and the conversation.

One custom slot mapping action (run by ``action_extract_slots`` after every user message) fills
every slot that describes the turn rather than the customer, so each turn costs one call to the
action server, not one per slot:

- ``channel`` (``voice``, ``sms``, ``chat``): the channel the message came in on, so stories,
  rules and ``rasa test`` can branch on it;
- ``interrupted``, ``unheard``: a barge-in reported by the VAPI connector (actions/barge_in.py);
- ``offer``: cleared when the customer answers something other than the bot's offer.
"""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.barge_in import (
    ANSWERS_TO_AN_OFFER,
    BargeIn,
    latest_intent,
    topic_of,
    turn_bot_events,
    unheard_remainder,
)
from actions.channel import channel_of
from actions.formatting import current_channel


class ActionExtractTurnContext(Action):
    """The custom slot mapping of ``channel``, ``interrupted``, ``unheard`` and ``offer``."""

    def name(self) -> str:
        return "action_extract_turn_context"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        events: List[EventType] = []
        channel = channel_of(tracker)
        if channel is not None and channel != tracker.get_slot("channel"):
            events.append(SlotSet("channel", channel))
        metadata = (tracker.latest_message or {}).get("metadata") or {}
        barge_in = BargeIn.parse(metadata.get("barge_in")) if isinstance(metadata, dict) else None
        if barge_in is not None and barge_in.cut_off:
            events.append(SlotSet("interrupted", True))
            bot_events = turn_bot_events(tracker)
            original = " ".join(e["text"] for e in bot_events)
            remainder = unheard_remainder(barge_in, original)
            if remainder:
                events.append(
                    SlotSet(
                        "unheard",
                        {
                            "text": remainder,
                            "topic": topic_of(bot_events),
                            "channel": channel or current_channel(tracker),
                            "offered": False,
                        },
                    )
                )
        elif tracker.get_slot("interrupted") is not False:
            # False rather than unset, so rules can ask for "not an interruption".
            events.append(SlotSet("interrupted", False))
        if tracker.get_slot("offer") and latest_intent(tracker) not in ANSWERS_TO_AN_OFFER:
            events.append(SlotSet("offer", None))
        return events
