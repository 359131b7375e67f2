"""The channel kind of a message (``voice``, ``sms``, ``chat``), and backchannels that are not
turns. The ``channel`` slot is filled by omnichannel/turn_context.py."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher

from omnichannel.channels import kind_of


def channel_of(tracker: Tracker) -> Optional[str]:
    """The latest user message's channel kind: its metadata first, then its input channel."""
    metadata = (tracker.latest_message or {}).get("metadata")
    return kind_of(metadata, tracker.get_latest_input_channel())


class ActionIgnoreBackchannel(Action):
    """ "Uh-huh", "okay": the listener is just following along, so the turn is taken back.

    Reverting keeps backchannels out of the dialogue state, so they neither shape later
    predictions nor make the bot answer (on a call, it keeps listening).
    """

    def name(self) -> str:
        return "action_ignore_backchannel"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        return [UserUtteranceReverted()]
