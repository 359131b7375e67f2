"""Custom slot mappings on the action server: ``action_extract_turn_context``, for a Rasa without
our patches.

The Rasa server of this project fills these slots in process (connectors/rasa_patches.py), so
this action is called only by a Rasa that runs the stock turn (``rasa_patches: false``, e.g. the
stock side of ``make bench``). Both compute the same slots with
:func:`omnichannel.turn_context.turn_context_slots`.
"""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.barge_in import latest_intent, turn_bot_events
from omnichannel.turn_context import TURN_SLOTS, TurnFacts, turn_context_slots


class ActionExtractTurnContext(Action):
    """The custom slot mapping of ``channel``, ``interrupted``, ``unheard`` and ``offer``."""

    def name(self) -> str:
        return "action_extract_turn_context"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        facts = TurnFacts(
            metadata=(tracker.latest_message or {}).get("metadata"),
            input_channel=tracker.get_latest_input_channel(),
            intent=latest_intent(tracker),
            slots={name: tracker.get_slot(name) for name in TURN_SLOTS},
            bot_events=turn_bot_events(tracker),
        )
        return [SlotSet(name, value) for name, value in turn_context_slots(facts)]
