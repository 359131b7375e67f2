"""Each channel's limits for text that actions compose themselves, and dates as each reads them.

Designers' responses get their channel form from ``channel:`` variations and the renderers.
Text an action composes (an LLM answer, an order's status) is also held to hard limits before it
leaves the action server, because nobody reviewed it:

- :class:`ChannelStyle` per channel kind: voice at most two short speakable sentences; SMS plain
  GSM-7 within two segments; WhatsApp short, with WhatsApp's emphasis (the WhatsApp renderer
  turns markdown into it), about 700 characters; chat markdown, about 600 characters;
- :func:`fit` holds any text to its channel's style, cutting at a sentence boundary;
- :func:`date_for` writes a date the way each channel reads it ("Tuesday, March 4th" aloud,
  "Tue Mar 4" in a text).

The channel renderers still apply on top (numbers spoken digit by digit, SMS split, chat HTML).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Callable, Dict, List, Optional

from omnichannel.channels import CHAT, SMS, VOICE, WHATSAPP
from omnichannel.rendering.messages import split_sentences
from omnichannel.rendering.sms import GSM7_SEGMENT, plain_sms, sms_units
from omnichannel.rendering.voice import plain_speech

#: Channel kind when a message names none (typed text from `rasa shell` or the REST channel).
DEFAULT_CHANNEL = CHAT

_CHANNEL_LABEL = re.compile(r"^\s*\[(?:voice|sms|whatsapp|chat)\]\s*", re.IGNORECASE)


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
    VOICE: ChannelStyle(
        channel=VOICE,
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
    SMS: ChannelStyle(
        channel=SMS,
        guidance=(
            "The customer is texting (SMS). Answer in plain text that fits in one or two SMS "
            f"segments ({2 * GSM7_SEGMENT} GSM-7 characters at most), no markdown, no emoji."
        ),
        max_chars=2 * GSM7_SEGMENT,
        llm_budget=12.0,
        llm_max_tokens=160,
    ),
    WHATSAPP: ChannelStyle(
        channel=WHATSAPP,
        guidance=(
            "The customer is writing to us on WhatsApp. Answer briefly, like a helpful message "
            "from a person: a few short sentences, bold for what matters, links as plain URLs, "
            "no tables or headings."
        ),
        max_chars=700,
        markdown=True,
        llm_budget=12.0,
        llm_max_tokens=300,
    ),
    CHAT: ChannelStyle(
        channel=CHAT,
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


def _truncate_words(sentence: str, room: int, measure: Callable[[str], int], ellipsis: str) -> str:
    """The longest word-boundary prefix of ``sentence`` that fits ``room`` with ``ellipsis``."""
    kept: List[str] = []
    for word in sentence.split():
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
    measure: Callable[[str], int] = len
    if style.channel == VOICE:
        text, ellipsis = plain_speech(text)[0], "."
    elif style.channel == SMS:
        text, measure, ellipsis = plain_sms(text), sms_units, "..."
    else:
        ellipsis = "…"
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
    """An ISO date (``2026-11-26``), or None for anything else."""
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
    if channel == VOICE:
        return spoken_date(value)
    if channel == SMS:
        return short_date(value)
    return long_date(value)
