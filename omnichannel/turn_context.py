"""The dialogue state of each user turn, read from the message and the turn before it.

Filled after every user message by the custom slot mapping ``action_extract_turn_context``
(domain.yml). Inside the Rasa server that mapping runs in process (connectors/rasa_patches.py),
since a remote call per turn cost a round trip plus the parse of the whole tracker on the
action server; the action server keeps an action of that name (actions/turn_context.py) for a
Rasa that runs without the patches. Both call :func:`turn_context_slots`:

- ``channel`` (``voice``, ``sms``, ``chat``): the channel the message came in on, so stories,
  rules and ``rasa test`` can branch on it;
- ``interrupted``, ``unheard``: a barge-in reported by the VAPI connector
  (omnichannel/barge_in.py);
- ``offer``: cleared when the customer answers something other than the bot's offer; set to
  ``media`` when a caller says yes to the offer the voice renderer makes for a picture or file
  it cannot show ("I can text you the picture if you like"), so the yes texts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from omnichannel.barge_in import (
    ANSWERS_TO_AN_OFFER,
    OFFER_MEDIA,
    BargeIn,
    topic_of,
    unheard_remainder,
)
from omnichannel.channels import VOICE, kind_of
from omnichannel.rendering.styles import DEFAULT_CHANNEL, STYLES

#: The slots this mapping fills.
TURN_SLOTS = ("channel", "interrupted", "unheard", "offer")


@dataclass(frozen=True)
class TurnFacts:
    """What the turn context is computed from, whichever tracker it was read from."""

    #: The latest user message's metadata and input channel, and its intent's name.
    metadata: Optional[Mapping[str, Any]]
    input_channel: Optional[str]
    intent: Optional[str]
    #: Current values of the slots in TURN_SLOTS.
    slots: Mapping[str, Any]
    #: The bot messages (Rasa's event dicts: ``text``, ``metadata``) between the previous user
    #: message and the latest one.
    bot_events: Sequence[Mapping[str, Any]]


def turn_context_slots(facts: TurnFacts) -> List[Tuple[str, Any]]:
    """``(slot, value)`` pairs to set for this turn, in order; only changes."""
    updates: List[Tuple[str, Any]] = []
    channel = kind_of(facts.metadata, facts.input_channel)
    if channel is not None and channel != facts.slots.get("channel"):
        updates.append(("channel", channel))
    metadata = facts.metadata if isinstance(facts.metadata, Mapping) else {}
    barge_in = BargeIn.parse(metadata.get("barge_in"))
    if barge_in is not None and barge_in.cut_off:
        updates.append(("interrupted", True))
        bot_events = [e for e in facts.bot_events if e.get("text")]
        remainder = unheard_remainder(barge_in, " ".join(e["text"] for e in bot_events))
        if remainder:
            current = facts.slots.get("channel")
            unheard = {
                "text": remainder,
                "topic": topic_of(bot_events),
                "channel": channel or (current if current in STYLES else DEFAULT_CHANNEL),
                "offered": False,
            }
            updates.append(("unheard", unheard))
    elif facts.slots.get("interrupted") is not False:
        # False rather than unset, so rules can ask for "not an interruption".
        updates.append(("interrupted", False))
    if facts.slots.get("offer") and facts.intent not in ANSWERS_TO_AN_OFFER:
        updates.append(("offer", None))
    elif (
        not facts.slots.get("offer")
        and channel == VOICE
        and facts.intent in ANSWERS_TO_AN_OFFER
        and any(_has_media(event) for event in facts.bot_events)
    ):
        updates.append(("offer", OFFER_MEDIA))
    return updates


def _has_media(event: Mapping[str, Any]) -> bool:
    """Whether a bot event carried a picture or file (which a call could only offer)."""
    data = event.get("data")
    return isinstance(data, Mapping) and bool(data.get("image") or data.get("attachment"))
