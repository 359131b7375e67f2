"""The dialogue state of each user turn, read from the message and the turn before it.

Filled after every user message by the custom slot mapping ``action_extract_turn_context``
(domain.yml). Inside the Rasa server that mapping runs in process (connectors/rasa_patches.py),
since a remote call per turn cost a round trip plus the parse of the whole tracker on the
action server; the action server keeps an action of that name (actions/slot_mappings.py) for a
Rasa that runs without the patches. Both call :func:`turn_context_slots`:

- ``channel`` (``voice``, ``sms``, ``whatsapp``, ``chat``): the channel the message came in
  on, so stories, rules and ``rasa test`` can branch on it;
- ``interrupted``, ``unheard``: a barge-in reported by the VAPI connector (below);
- ``offer``: cleared when the customer answers something other than the bot's offer; set to
  ``media`` when a caller says yes to the offer the voice renderer makes for a picture or file
  it cannot show ("I can text you the picture if you like"), so the yes texts it.

What a caller did not hear when they talked over the assistant (barge-in): the VAPI connector
marks a user message that interrupted the bot with ``metadata.barge_in = {"sent_text",
"heard_text", "heard_ratio"}``. The pure functions here (:class:`BargeIn`,
:func:`unheard_remainder`) turn that report into the unheard remainder of the bot's message,
which the ``unheard`` slot keeps and the actions (actions/barge_in.py) resume, offer or text
later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, cast

from omnichannel.channels import VOICE, kind_of
from omnichannel.rendering.messages import SENTENCE_END, split_sentences
from omnichannel.rendering.styles import DEFAULT_CHANNEL, STYLES
from omnichannel.textable import sms_topic

#: A message counts as cut off when the caller heard less than this share of it.
CUT_OFF_RATIO = 0.98
#: What a cut-off message was about when it declares no ``sms_topic`` (omnichannel/textable.py).
DEFAULT_TOPIC = "my last answer"

OFFER_UNHEARD = "unheard"
#: The bot (on a call) offered to text a picture or file it could not show.
OFFER_MEDIA = "media"
#: Intents that answer an offer ("yes", or "okay" / "uh-huh" which mean yes after a question);
#: any other intent leaves the offer behind.
ANSWERS_TO_AN_OFFER = frozenset({"affirm", "backchannel"})
#: The hand-off's offer of a callback (actions/handoff.py): a no to it is an answer too (it
#: goes on with the hand-off), so the slot stays for the rule that says so.
OFFER_CALLBACK = "callback"
ANSWERS_TO_A_CALLBACK_OFFER = ANSWERS_TO_AN_OFFER | {"deny"}
_WORD = re.compile(r"[A-Za-z0-9']+")


@dataclass(frozen=True)
class BargeIn:
    """The VAPI connector's report of an interruption (``metadata.barge_in``)."""

    sent_text: str
    heard_text: str
    heard_ratio: float

    @classmethod
    def parse(cls, value: Any) -> Optional[BargeIn]:
        """The report, or None when there is none or it is malformed."""
        if not isinstance(value, Mapping):
            return None
        sent, heard = value.get("sent_text"), value.get("heard_text", "")
        try:
            ratio = float(cast(Any, value.get("heard_ratio")))
        except (TypeError, ValueError):
            return None
        if not isinstance(sent, str) or not sent.strip() or not isinstance(heard, str):
            return None
        return cls(sent_text=sent, heard_text=heard, heard_ratio=min(1.0, max(0.0, ratio)))

    @property
    def cut_off(self) -> bool:
        return self.heard_ratio < CUT_OFF_RATIO


def heard_position(sent: str, heard: str, ratio: float) -> int:
    """How far into ``sent`` (characters) the caller heard.

    The transcript of what was heard is aligned word by word with what was sent, tolerating a
    missed or misheard word; when they do not align, ``ratio`` (VAPI's share of the speech
    played) places the cut instead.
    """
    sent_words = [(m.group(0).lower(), m.end()) for m in _WORD.finditer(sent)]
    heard_words = [w.lower() for w in _WORD.findall(heard)]
    if heard_words:
        i = j = matched = end = 0
        while i < len(sent_words) and j < len(heard_words):
            if sent_words[i][0] == heard_words[j]:
                matched, end = matched + 1, sent_words[i][1]
                i, j = i + 1, j + 1
            elif i + 1 < len(sent_words) and sent_words[i + 1][0] == heard_words[j]:
                i += 1
            else:
                j += 1
        if matched >= max(1, len(heard_words) // 2):
            return end
    return round(ratio * len(sent))


def unheard_sentences(barge_in: BargeIn) -> List[str]:
    """The sentences of ``sent_text`` from the one the caller interrupted (a sentence they
    heard to its end is not repeated)."""
    sent = barge_in.sent_text.strip()
    position = heard_position(sent, barge_in.heard_text, barge_in.heard_ratio)
    starts = [0] + [m.end() for m in SENTENCE_END.finditer(sent)]
    index = max(i for i, start in enumerate(starts) if start <= position)
    end = starts[index + 1] if index + 1 < len(starts) else len(sent)
    if not _WORD.search(sent[position:end]):
        index += 1
    return split_sentences(sent)[index:] if index < len(starts) else []


def unheard_remainder(barge_in: BargeIn, original: str) -> str:
    """What the caller did not hear, in the words of the bot's message.

    ``sent_text`` is the voice rendering (numbers spelled out, links dropped); when the bot's
    original messages have as many sentences, the remainder is taken from them instead, so it
    reads right when it is later texted or shown in chat.
    """
    rest = unheard_sentences(barge_in)
    if not rest:
        return ""
    spoken = split_sentences(barge_in.sent_text)
    written = split_sentences(original)
    if written and len(written) == len(spoken):
        rest = written[len(written) - len(rest) :]
    return " ".join(rest)


def topic_of(bot_events: Sequence[Mapping[str, Any]]) -> str:
    """What the cut-off turn was about, for offers ("the rest of the refund policy"): the
    ``topic`` an action gave its message, or the ``sms_topic`` its response declares."""
    for event in reversed(bot_events):
        metadata = event.get("metadata") or {}
        topic = metadata.get("topic")
        if isinstance(topic, str):
            return topic
        topic = sms_topic(event)
        if topic:
            return topic
    return DEFAULT_TOPIC


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
    answers = (
        ANSWERS_TO_A_CALLBACK_OFFER
        if facts.slots.get("offer") == OFFER_CALLBACK
        else ANSWERS_TO_AN_OFFER
    )
    if facts.slots.get("offer") and facts.intent not in answers:
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
