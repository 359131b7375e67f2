"""Each channel's natural form, for actions that write their own messages.

Designers' responses get their channel form from ``channel:`` variations in domain.yml and from
the connectors' renderers. Actions that compose text (order status, tracking, the LLM fallback)
use this module instead, so one action answers a caller, a texter and a chat visitor each in
the form that suits them:

- :class:`ChannelStyle` holds each channel's hard limits (voice: two short speakable sentences;
  SMS: at most two GSM-7 segments; chat: markdown, about 600 characters), and :func:`fit` holds
  any text to them, cutting at a sentence boundary;
- :func:`spoken_date` / :func:`short_date` / :func:`long_date` write a date the way each channel
  reads it ("Tuesday, March 4th" aloud, "Mar 4" in a text);
- :class:`ChannelReply` is one answer in the three forms; :meth:`ChannelReply.send` utters the one
  for the conversation's current channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Dict, List, Optional, Sequence

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.channel import channel_of
from connectors.rendering import gsm7_safe, sms_segments, strip_markdown

#: Channel kind when a message names none (typed text from `rasa shell` or the REST channel).
DEFAULT_CHANNEL = "chat"

#: Characters per concatenated SMS segment: GSM-7 and UCS-2 (see connectors.rendering).
SMS_SEGMENT_GSM7 = 153
SMS_SEGMENT_UCS2 = 67

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
# Pictographs, dingbats and variation selectors: nothing a voice can say.
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
_WORDS = re.compile(r"[A-Za-z']+")
#: A sentence left with this few words once its URL is removed is dropped from speech.
URL_SENTENCE_MAX_WORDS = 5
_CHANNEL_LABEL = re.compile(r"^\s*\[(?:voice|sms|chat)\]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ChannelStyle:
    """How one channel reads a message, told to the LLM and enforced on its answer."""

    channel: str
    guidance: str
    max_chars: int
    max_sentences: Optional[int] = None
    markdown: bool = False
    urls: bool = True
    #: Seconds the whole LLM fallback may take on this channel, retry included.
    llm_budget: float = 8.0
    llm_max_tokens: int = 300

    def limits_text(self) -> str:
        """The hard limits in words, for the LLM's instructions."""
        parts = [f"at most {self.max_chars} characters"]
        if self.max_sentences:
            parts.append(f"at most {self.max_sentences} sentences")
        parts.append("markdown allowed" if self.markdown else "plain text only, no markdown")
        if not self.urls:
            parts.append("no URLs, no lists")
        return "; ".join(parts)


STYLES: Dict[str, ChannelStyle] = {
    "voice": ChannelStyle(
        channel="voice",
        guidance=(
            "The customer is on a phone call and hears your answer through text-to-speech. "
            "Answer in one or two short, natural spoken sentences. No lists, no URLs, no "
            "markdown, no emoji, no symbols; write numbers and dates as they are said."
        ),
        max_chars=260,
        max_sentences=2,
        urls=False,
        llm_budget=4.0,
        llm_max_tokens=120,
    ),
    "sms": ChannelStyle(
        channel="sms",
        guidance=(
            "The customer is texting (SMS). Answer in plain text that fits in one or two SMS "
            "segments (306 GSM-7 characters at most), no markdown, no emoji."
        ),
        max_chars=2 * SMS_SEGMENT_GSM7,
        llm_budget=12.0,
        llm_max_tokens=160,
    ),
    "chat": ChannelStyle(
        channel="chat",
        guidance=(
            "The customer is in the web chat on the shop's site. Short markdown is fine "
            "(bold, short lists, links). Keep it brief."
        ),
        max_chars=600,
        markdown=True,
        llm_budget=8.0,
        llm_max_tokens=400,
    ),
}


def style_for(channel: Optional[str]) -> ChannelStyle:
    """The style of a channel kind; typed text of unknown origin reads like chat."""
    return STYLES.get(channel or "", STYLES[DEFAULT_CHANNEL])


def current_channel(tracker: Tracker) -> str:
    """The conversation's current channel kind: the `channel` slot, else the latest message's."""
    slot = tracker.get_slot("channel")
    if slot in STYLES:
        return slot
    return channel_of(tracker) or DEFAULT_CHANNEL


def sms_units(text: str) -> int:
    """Length of ``text`` measured against the two-segment GSM-7 budget (306).

    UCS-2 text holds 67 characters per segment instead of 153, so each character counts
    153/67 units; a text within 306 units then fits two segments either way.
    """
    counted = sms_segments(text)
    if counted.encoding == "GSM-7":
        return counted.units
    return -(-counted.units * SMS_SEGMENT_GSM7 // SMS_SEGMENT_UCS2)


def split_sentences(text: str) -> List[str]:
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def _speakable(text: str) -> str:
    """Voice form: no markdown, URLs, list markers, emoji or line breaks."""
    text = strip_markdown(text, keep_link_urls=False)
    text = _EMOJI.sub("", text)
    lines = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    sentences = []
    for line in lines:
        for sentence in split_sentences(line):
            if _URL.search(sentence):
                sentence = _URL.sub("", sentence).strip()
                # "See <link> for more." says nothing once the link is gone.
                if len(_WORDS.findall(sentence)) <= URL_SENTENCE_MAX_WORDS:
                    continue
            sentences.append(sentence if sentence[-1] in ".!?:;," else sentence + ".")
    text = " ".join(sentences)
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    text = re.sub(r"\(\s*\)", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _plain_sms(text: str) -> str:
    text = gsm7_safe(strip_markdown(text, keep_link_urls=True))
    text = _LIST_MARKER.sub("- ", text)
    text = _EMOJI.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _truncate_words(sentence: str, room: int, measure, ellipsis: str) -> str:
    """The longest word-boundary prefix of ``sentence`` that fits ``room`` with ``ellipsis``."""
    words = sentence.split()
    kept: List[str] = []
    for word in words:
        candidate = " ".join([*kept, word])
        if measure(candidate.rstrip(",;:") + ellipsis) > room:
            break
        kept.append(word)
    if not kept:
        return ""
    return " ".join(kept).rstrip(",;:-") + ellipsis


def fit(text: str, channel: str) -> str:
    """``text`` in ``channel``'s form, held to its limits, cut at a sentence boundary.

    Whole sentences are kept while they fit; when even the first one does not, it is cut at a
    word boundary and ends with an ellipsis (a full stop on voice, which cannot say one).
    """
    style = style_for(channel)
    text = _CHANNEL_LABEL.sub("", text or "").strip()
    if style.channel == "voice":
        text = _speakable(text)
        measure, ellipsis = len, "."
    elif style.channel == "sms":
        text = _plain_sms(text)
        measure, ellipsis = sms_units, "..."
    else:
        measure, ellipsis = len, "…"
    if measure(text) <= style.max_chars and (
        style.max_sentences is None or len(split_sentences(text)) <= style.max_sentences
    ):
        return text
    kept: List[str] = []
    for sentence in split_sentences(text):
        if style.max_sentences is not None and len(kept) >= style.max_sentences:
            break
        if measure(" ".join([*kept, sentence])) > style.max_chars:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    return _truncate_words(split_sentences(text)[0], style.max_chars, measure, ellipsis)


def _ordinal(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th') }"


def parse_date(value: Optional[str]) -> Optional[date]:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def spoken_date(value: date) -> str:
    """How a person says a date: "Tuesday, March 4th"."""
    return f"{value:%A}, {value:%B} {_ordinal(value.day)}"


def short_date(value: date) -> str:
    """A compact date for a text: "Tue Mar 4"."""
    return f"{value:%a %b} {value.day}"


def long_date(value: date) -> str:
    """A written date for chat: "Tuesday, March 4, 2026"."""
    return f"{value:%A, %B} {value.day}, {value.year}"


def date_for(channel: str, value: date) -> str:
    """The date written the way ``channel`` reads it."""
    if channel == "voice":
        return spoken_date(value)
    if channel == "sms":
        return short_date(value)
    return long_date(value)


@dataclass
class ChannelReply:
    """One answer written once per channel; :meth:`send` utters the current channel's form.

    ``voice`` and ``sms`` fall back to ``chat`` (made plain and held to their limits by
    :func:`fit`) when an action does not write them. ``buttons`` are sent with the chat form
    only. ``metadata`` goes with the message into the tracker (e.g. ``sms_text``, what "text me
    that" sends when this message is the latest thing worth texting).
    """

    chat: str
    voice: Optional[str] = None
    sms: Optional[str] = None
    buttons: Sequence[Dict[str, Any]] = ()
    metadata: Dict[str, Any] = field(default_factory=dict)

    def text_for(self, channel: str) -> str:
        if channel == "voice":
            return fit(self.voice if self.voice is not None else self.chat, "voice")
        if channel == "sms":
            return fit(self.sms if self.sms is not None else self.chat, "sms")
        return self.chat

    def send(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> str:
        """Utter the form for the conversation's current channel; returns the channel kind."""
        channel = current_channel(tracker)
        dispatcher.utter_message(
            text=self.text_for(channel),
            buttons=list(self.buttons) if channel == "chat" else None,
            **self.metadata,
        )
        return channel
