"""Barge-in: what happens when a caller talks over the assistant.

The VAPI connector marks a user message that interrupted the bot with
``metadata.barge_in = {"sent_text", "heard_text", "heard_ratio"}``. On every user turn,
``action_extract_turn_context`` (actions/turn_context.py) turns that into dialogue state:

- ``interrupted`` (bool, featurized): this message cut the bot off, so rules can branch on it;
- ``unheard`` (unfeaturized): the part of the cut-off message the caller did not hear, from the
  start of the sentence they interrupted, with its topic and channel, kept until it is
  delivered, so a later SMS or chat turn can offer it ("Want the rest of the refund policy by
  text?");
- ``offer`` (categorical, featurized): what the bot's last message offered ("tracking_link",
  "unheard"); cleared as soon as the customer answers anything but yes (or "okay").

``action_handle_barge_in`` then does what a person would: after a backchannel or noise
("uh-huh", "okay", "yeah", a cough) it resumes with the unheard remainder, not from the start
(so a "yes" that cut off an offer hears the offer again, and answers it then); after
"stop", "wait", "hold on" it stops and asks what they need; anything else is a new request and is
answered at once (rules send recognised intents to their usual actions; unclear ones go to the
LLM here), without repeating the cut-off message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import current_channel
from actions.llm_fallback import answer_with_llm
from omnichannel.rendering.messages import SENTENCE_END, split_sentences

#: A message counts as cut off when the caller heard less than this share of it.
CUT_OFF_RATIO = 0.98
#: An unclear utterance with at most this many letters and digits is noise, not a request.
NOISE_MAX_CHARACTERS = 4
#: What a cut-off message was about, for offers ("the rest of the refund policy").
RESPONSE_TOPICS = {"utter_refund_policy": "the refund policy"}
DEFAULT_TOPIC = "my last answer"

OFFER_UNHEARD = "unheard"
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


def turn_bot_events(tracker: Tracker) -> List[Dict[str, Any]]:
    """The bot messages of the turn before the latest user message."""
    events = tracker.events
    user_indexes = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if not user_indexes:
        return []
    latest = user_indexes[-1]
    previous = user_indexes[-2] if len(user_indexes) > 1 else -1
    return [e for e in events[previous + 1 : latest] if e.get("event") == "bot" and e.get("text")]


def topic_of(bot_events: List[Dict[str, Any]]) -> str:
    for event in reversed(bot_events):
        metadata = event.get("metadata") or {}
        if isinstance(metadata.get("topic"), str):
            return metadata["topic"]
        if metadata.get("utter_action") in RESPONSE_TOPICS:
            return RESPONSE_TOPICS[metadata["utter_action"]]
    return DEFAULT_TOPIC


def latest_intent(tracker: Tracker) -> Optional[str]:
    return ((tracker.latest_message or {}).get("intent") or {}).get("name")


def is_noise(text: str) -> bool:
    """A cough, "mm", a stray syllable: too little to be a request."""
    return len(re.sub(r"[^A-Za-z0-9]", "", text or "")) <= NOISE_MAX_CHARACTERS


def pending_unheard(tracker: Tracker) -> Optional[Dict[str, Any]]:
    value = tracker.get_slot("unheard")
    if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"]:
        return value
    return None


class ActionHandleBargeIn(Action):
    """Answers a message that interrupted the bot (rules run it when ``interrupted`` is set)."""

    def name(self) -> str:
        return "action_handle_barge_in"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        intent = latest_intent(tracker)
        text = (tracker.latest_message or {}).get("text") or ""
        if intent == "hold_on":
            dispatcher.utter_message(response="utter_hold_on")
            return []
        if intent in ("backchannel", "affirm") or is_noise(text):
            unheard = pending_unheard(tracker)
            if unheard is None:
                return []
            dispatcher.utter_message(text=unheard["text"], resumed=True, topic=unheard["topic"])
            return [SlotSet("unheard", None)]
        await answer_with_llm(dispatcher, tracker)
        return []


class ActionOfferUnheard(Action):
    """On another channel than the call, offers what the caller did not hear (after a greeting)."""

    def name(self) -> str:
        return "action_offer_unheard"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        unheard = pending_unheard(tracker)
        channel = current_channel(tracker)
        if unheard is None or unheard.get("offered") or channel in ("voice", unheard["channel"]):
            return []
        dispatcher.utter_message(response="utter_offer_unheard", unheard_topic=unheard["topic"])
        return [SlotSet("offer", OFFER_UNHEARD), SlotSet("unheard", {**unheard, "offered": True})]


class ActionDeliverUnheard(Action):
    """Says (on SMS or chat) the rest of a message the caller did not hear on the call."""

    def name(self) -> str:
        return "action_deliver_unheard"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        unheard = pending_unheard(tracker)
        if unheard is None:
            dispatcher.utter_message(response="utter_nothing_unheard")
            return [SlotSet("offer", None)]
        dispatcher.utter_message(
            text=f"Here's the rest of {unheard['topic']}: {unheard['text']}",
            topic=unheard["topic"],
        )
        return [SlotSet("unheard", None), SlotSet("offer", None)]
