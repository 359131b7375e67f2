"""Bot messages as every channel renderer sees them, and the markdown subset designers write.

Rasa hands an output channel one dict per bot message (``text``, ``buttons``, ``image``,
``custom``, ``attachment``, ``elements``, ``quick_replies``). Connectors parse it once, at the
edge, into a :class:`BotMessage` and render it with their channel's module beside this one
(``voice``, ``sms``, ``chat``); ``styles`` holds each channel's limits for text that actions
compose themselves.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from omnichannel.channels import KINDS


@dataclass(frozen=True)
class Button:
    """A choice offered to the customer; ``payload`` is what choosing it sends back to Rasa."""

    title: str
    payload: str


@dataclass(frozen=True)
class BotMessage:
    """One bot message as Rasa produced it, parsed from the dict given to ``send_response``."""

    text: str = ""
    buttons: Tuple[Button, ...] = ()
    image: Optional[str] = None
    attachment: Optional[str] = None
    custom: Optional[Dict[str, Any]] = None
    #: Set when the message was already delivered on another channel kind ("sms" for a copy of
    #: a text sent during a call by ``action_send_by_sms``): it is in the tracker so every
    #: channel's history shows it, but a live channel must not say it again (see
    #: :meth:`is_for`).
    delivered_on: Optional[str] = None
    #: The person from the support team who wrote it (an agent's reply during a hand-off,
    #: ``{"agent": {"name": …}}`` in the message): channels show it as theirs, not the bot's.
    author: Optional[str] = None

    @classmethod
    def from_rasa(cls, message: Mapping[str, Any]) -> BotMessage:
        """Parse Rasa's message dict; quick replies count as buttons, malformed ones are dropped.

        ``elements`` (carousels) have no equivalent on any of our channels besides their titles,
        so they are folded into the text.
        """
        text = str(message.get("text") or "")
        buttons = tuple(
            Button(title=str(item["title"]), payload=str(item.get("payload") or item["title"]))
            for item in list(message.get("buttons") or [])
            + list(message.get("quick_replies") or [])
            if isinstance(item, Mapping) and item.get("title")
        )
        elements = [
            str(item.get("title"))
            for item in message.get("elements") or []
            if isinstance(item, Mapping) and item.get("title")
        ]
        if elements:
            text = "\n".join([text, *elements]) if text else "\n".join(elements)
        custom = message.get("custom")
        attachment = message.get("attachment")
        agent = message.get("agent")
        author = agent.get("name") if isinstance(agent, Mapping) else None
        return cls(
            text=text,
            buttons=buttons,
            image=str(message["image"]) if message.get("image") else None,
            attachment=str(attachment) if isinstance(attachment, str) and attachment else None,
            custom=dict(custom) if isinstance(custom, Mapping) else None,
            delivered_on=(str(message["channel"]) if message.get("channel") in KINDS else None),
            author=str(author) if isinstance(author, str) and author.strip() else None,
        )

    def is_for(self, channel: str) -> bool:
        """Whether a live ``channel`` (a channel kind) should deliver this message: not
        when it was already delivered on another channel (history replay still shows it)."""
        return self.delivered_on is None or self.delivered_on == channel

    def as_dict(self) -> Dict[str, Any]:
        """The message in Rasa's dict form (for storage, replay and chat frames)."""
        result: Dict[str, Any] = {}
        if self.text:
            result["text"] = self.text
        if self.buttons:
            result["buttons"] = [{"title": b.title, "payload": b.payload} for b in self.buttons]
        if self.image:
            result["image"] = self.image
        if self.attachment:
            result["attachment"] = self.attachment
        if self.custom is not None:
            result["custom"] = self.custom
        if self.delivered_on:
            result["channel"] = self.delivered_on
        if self.author:
            result["agent"] = {"name": self.author}
        return result


@dataclass
class TurnOutput:
    """Everything a turn sent to one output channel, in order."""

    messages: List[BotMessage] = field(default_factory=list)

    def add(self, message: Mapping[str, Any]) -> BotMessage:
        parsed = BotMessage.from_rasa(message)
        self.messages.append(parsed)
        return parsed


MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((\S+?)\)")
_MARKDOWN_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MARKDOWN_BULLET = re.compile(r"^\s*[-*+]\s+", re.MULTILINE)


def strip_markdown(text: str, keep_link_urls: bool = True) -> str:
    """Plain text from the small markdown subset designers use in responses.

    ``[label](url)`` becomes ``label (url)`` when ``keep_link_urls``, else just ``label``.
    """
    text = MARKDOWN_LINK.sub(
        (lambda m: f"{m.group(1)} ({m.group(2)})") if keep_link_urls else (lambda m: m.group(1)),
        text,
    )
    text = _MARKDOWN_HEADING.sub("", text)
    text = _MARKDOWN_BULLET.sub("- ", text)
    previous = None
    while previous != text:
        previous = text
        text = _MARKDOWN_EMPHASIS.sub(r"\2", text)
    return text


#: A list item's marker at the start of a line: "-", "*", "+", "•", "1." or "2)".
LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+", re.MULTILINE)
#: Where a sentence ends: after . ! or ?, and any closing quote or bracket.
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")
#: Characters that only make sense as part of an emoji (joiners, variation selectors, keycaps),
#: read out by name or garbled by TTS engines, and forcing UCS-2 on SMS.
_EMOJI_EXTRAS = {"\u200d", "\ufe0e", "\ufe0f", "\u20e3"}


def without_emoji(text: str) -> str:
    """``text`` without emoji, pictographs and their modifiers (no voice can say them, and one
    turns a whole SMS into UCS-2)."""
    return "".join(
        ch
        for ch in text
        if ch not in _EMOJI_EXTRAS
        and unicodedata.category(ch) not in ("So", "Cs", "Co")
        and not ("\U0001f3fb" <= ch <= "\U0001f3ff")
    )


def split_sentences(text: str) -> List[str]:
    """Sentences of ``text`` (a closing quote or bracket stays with its sentence)."""
    return [part.strip() for part in SENTENCE_END.split(text.strip()) if part.strip()]
