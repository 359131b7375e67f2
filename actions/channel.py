"""The channel kind of a message (``voice``, ``sms``, ``chat``), and backchannels that are not
turns. The ``channel`` slot is filled from :func:`channel_of` by actions/turn_context.py."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher

CHANNELS = ("voice", "sms", "chat")

#: Input channel name (the connector's `name()`) -> the channel kind the dialogue cares about.
INPUT_CHANNEL_KINDS = {"vapi": "voice", "twilio_sms": "sms", "webchat": "chat"}


def channel_of(tracker: Tracker) -> Optional[str]:
    """The latest user message's channel kind: its metadata first, then its input channel."""
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    claimed = metadata.get("channel") if isinstance(metadata, dict) else None
    if claimed in CHANNELS:
        return claimed
    return INPUT_CHANNEL_KINDS.get(tracker.get_latest_input_channel() or "")


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
