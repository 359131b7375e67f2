"""'Text me that': sends the latest content to the conversation's phone by SMS."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher


class ActionSendBySms(Action):
    """Until the Twilio sending path exists, says plainly that texting is not available."""

    def name(self) -> str:
        return "action_send_by_sms"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        dispatcher.utter_message(
            text="Sorry, I can't send text messages from here yet. I can tell you again instead."
        )
        return []
