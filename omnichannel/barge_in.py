"""What a caller did not hear when they talked over the assistant (barge-in).

The VAPI connector marks a user message that interrupted the bot with
``metadata.barge_in = {"sent_text", "heard_text", "heard_ratio"}``. These pure functions turn
that report into the unheard remainder of the bot's message. The turn context (the ``unheard``
slot) is filled from them inside the Rasa process (omnichannel/turn_context.py), and the
actions (actions/barge_in.py) resume, offer or text that remainder later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from omnichannel.rendering.messages import SENTENCE_END, split_sentences
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
            ratio = float(value.get("heard_ratio"))
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


def topic_of(bot_events: List[Dict[str, Any]]) -> str:
    """What the cut-off turn was about, for offers ("the rest of the refund policy"): the
    ``topic`` an action gave its message, or the ``sms_topic`` its response declares."""
    for event in reversed(bot_events):
        metadata = event.get("metadata") or {}
        if isinstance(metadata.get("topic"), str):
            return metadata["topic"]
        topic = sms_topic(event)
        if topic:
            return topic
    return DEFAULT_TOPIC
