"""``action_confirm_intent``: asks before an act the classifier is unsure of.

The confirmation gate (config.yml, omnichannel/nlu/confirmation.py) turns an acting intent
predicted with too little confidence into ``nlu_confirm``, with the intent it stands for first
under it in the ranking. This action then asks that intent's question (``utter_confirm_<intent>``,
e.g. "Do you want me to put you through to a person?") and sets the ``offer`` slot to the intent.
On the customer's yes the rules run ``action_accept_offer`` (the offer is taken: the slot is
cleared, so a later yes acts on nothing) and then the act itself (data/rules.yml: "Yes to …").
"""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from omnichannel.nlu.confirmation import CONFIRM_INTENT, understood_intent


class ActionConfirmIntent(Action):
    def name(self) -> str:
        return "action_confirm_intent"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        latest = tracker.latest_message or {}
        predicted = (latest.get("intent") or {}).get("name")
        intent = understood_intent(predicted, latest.get("intent_ranking") or [])
        if predicted != CONFIRM_INTENT:
            intent = None
        question = f"utter_confirm_{intent}"
        if intent and question in (domain.get("responses") or {}):
            dispatcher.utter_message(response=question)
            return [SlotSet("offer", intent)]
        # A gated intent without its question (a configuration mistake): ask to rephrase rather
        # than act or guess.
        dispatcher.utter_message(response="utter_default")
        return []


class ActionAcceptOffer(Action):
    """The customer said yes to what the bot offered: the offer is taken before the act, so
    nothing is done twice on a second yes."""

    def name(self) -> str:
        return "action_accept_offer"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        return [SlotSet("offer", None)]
