"""Hand-off to a person: a transfer on a call, a clear message on SMS and chat."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import current_channel
from omnichannel.settings import load_settings


class ActionHandoffToHuman(Action):
    """Voice: transfer the call (VAPI call control). SMS and chat: say how a person will help."""

    def name(self) -> str:
        return "action_handoff_to_human"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        if current_channel(tracker) != "voice":
            dispatcher.utter_message(response="utter_handoff")
            return []
        destination = load_settings().handoff_phone_number
        if not destination:
            dispatcher.utter_message(response="utter_handoff_unavailable")
            return []
        dispatcher.utter_message(
            response="utter_handoff_transfer",
            json_message={
                "call_control": "transfer",
                "destination": destination,
                "content": "Transferring you now.",
            },
        )
        return []
