"""``action_confirm_intent``: asks before an act the classifier is unsure of.

The confirmation gate (config.yml, omnichannel/nlu/confirmation.py) turns an acting intent
predicted with too little confidence into ``nlu_confirm``, with the intent it stands for first
under it in the ranking. This action then asks that intent's question (``utter_confirm_<intent>``,
e.g. "Do you want me to put you through to a person?") and sets the ``offer`` slot to the intent.
On the customer's yes the rules run it again, which takes the offer (the slot is cleared), and
then the act itself (data/rules.yml: "Yes to a confirmation …").
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
        if predicted != CONFIRM_INTENT:
            # The customer answered the question: the offer is taken.
            return [SlotSet("offer", None)]
        intent = understood_intent(predicted, latest.get("intent_ranking") or [])
        question = f"utter_confirm_{intent}"
        if intent and question in (domain.get("responses") or {}):
            dispatcher.utter_message(response=question)
            return [SlotSet("offer", intent)]
        # A gated intent without its question (a configuration mistake): ask to rephrase rather
        # than act or guess.
        dispatcher.utter_message(response="utter_default")
        return []
