"""Barge-in: what happens when a caller talks over the assistant.

The VAPI connector marks a user message that interrupted the bot with
``metadata.barge_in = {"sent_text", "heard_text", "heard_ratio"}``. On every user turn, the
turn context (omnichannel/turn_context.py, filled inside the Rasa process) turns that into
dialogue state, with the arithmetic of omnichannel/turn_context.py:

- ``interrupted`` (bool, featurized): this message cut the bot off, so rules can branch on it;
- ``unheard`` (unfeaturized): the part of the cut-off message the caller did not hear, from the
  start of the sentence they interrupted, with its topic and channel, kept until it is
  delivered, so a later SMS or chat turn can offer it ("Want the rest of the refund policy by
  text?");
- ``offer`` (categorical, featurized): what the bot's last message offered ("tracking_link",
  "unheard"); cleared as soon as the customer answers anything but yes (or "okay").

``action_handle_barge_in`` then does what a person would: after a backchannel or noise
("uh-huh", "okay", "yeah", a cough) it resumes with the unheard remainder, not from the start
(so a "yes" that cut off an offer hears the offer again, and answers it then); after
"stop", "wait", "hold on" it stops and asks what they need; anything else is a new request and is
answered at once (rules send recognised intents to their usual actions; unclear ones go to the
LLM here), without repeating the cut-off message.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import current_channel
from actions.llm_fallback import answer_with_llm
from omnichannel.turn_context import OFFER_UNHEARD

#: An unclear utterance with at most this many letters and digits is noise, not a request.
NOISE_MAX_CHARACTERS = 4


def turn_bot_events(tracker: Tracker) -> List[Dict[str, Any]]:
    """The bot messages of the turn before the latest user message."""
    events = tracker.events
    user_indexes = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if not user_indexes:
        return []
    latest = user_indexes[-1]
    previous = user_indexes[-2] if len(user_indexes) > 1 else -1
    return [e for e in events[previous + 1 : latest] if e.get("event") == "bot" and e.get("text")]


def latest_intent(tracker: Tracker) -> Optional[str]:
    return ((tracker.latest_message or {}).get("intent") or {}).get("name")


def is_noise(text: str) -> bool:
    """A cough, "mm", a stray syllable: too little to be a request."""
    return len(re.sub(r"[^A-Za-z0-9]", "", text or "")) <= NOISE_MAX_CHARACTERS


def pending_unheard(tracker: Tracker) -> Optional[Dict[str, Any]]:
    value = tracker.get_slot("unheard")
    if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"]:
        return value
    return None


class ActionHandleBargeIn(Action):
    """Answers a message that interrupted the bot (rules run it when ``interrupted`` is set)."""

    def name(self) -> str:
        return "action_handle_barge_in"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        intent = latest_intent(tracker)
        text = (tracker.latest_message or {}).get("text") or ""
        if intent == "hold_on":
            dispatcher.utter_message(response="utter_hold_on")
            return []
        if intent in ("backchannel", "affirm") or is_noise(text):
            unheard = pending_unheard(tracker)
            if unheard is None:
                return []
            dispatcher.utter_message(text=unheard["text"], resumed=True, topic=unheard["topic"])
            return [SlotSet("unheard", None)]
        await answer_with_llm(dispatcher, tracker)
        return []


class ActionOfferUnheard(Action):
    """On another channel than the call, offers what the caller did not hear (after a greeting)."""

    def name(self) -> str:
        return "action_offer_unheard"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        unheard = pending_unheard(tracker)
        channel = current_channel(tracker)
        if unheard is None or unheard.get("offered") or channel in ("voice", unheard["channel"]):
            return []
        dispatcher.utter_message(response="utter_offer_unheard", unheard_topic=unheard["topic"])
        return [SlotSet("offer", OFFER_UNHEARD), SlotSet("unheard", {**unheard, "offered": True})]


class ActionDeliverUnheard(Action):
    """Says (on SMS or chat) the rest of a message the caller did not hear on the call."""

    def name(self) -> str:
        return "action_deliver_unheard"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        unheard = pending_unheard(tracker)
        if unheard is None:
            dispatcher.utter_message(response="utter_nothing_unheard")
            return [SlotSet("offer", None)]
        dispatcher.utter_message(
            text=f"Here's the rest of {unheard['topic']}: {unheard['text']}",
            topic=unheard["topic"],
        )
        return [SlotSet("unheard", None), SlotSet("offer", None)]
