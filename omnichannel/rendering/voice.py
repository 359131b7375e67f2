"""Voice: what a caller hears (VAPI speaks it through TTS)."""

from __future__ import annotations

import re
import time
from typing import Iterable, Sequence, Tuple

import phonenumbers

from omnichannel.rendering.messages import (
    LIST_MARKER,
    MARKDOWN_LINK,
    SENTENCE_END,
    BotMessage,
    strip_markdown,
    without_emoji,
)

#: Said instead of a link: a caller cannot click, and a URL read aloud helps nobody.
VOICE_LINK_OFFER = "I can text you the link if you like."
VOICE_MEDIA_OFFER = "I can text you the picture if you like."
VOICE_ATTACHMENT_OFFER = "I can text you the file if you like."

_URL = re.compile(r"(?:https?://|www\.)[^\s<>()]*[^\s<>().,;:!?'\"]", re.IGNORECASE)
_URL_WITH_PREPOSITION = re.compile(r"(?:\b(?:at|on|via|from)\s+)?" + _URL.pattern, re.IGNORECASE)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_E164 = re.compile(r"(?<![\w+])\+\d{8,15}\b")
#: Words and numbers; not amounts ("$12500"), which the speech engine reads as money.
_TOKEN = re.compile(r"(?<![$€£¥])\b[A-Za-z0-9]+\b")
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
#: Sentences left with at most this many words once their URL is gone ("Track it here:") say
#: nothing without the link, so they are dropped in favour of the offer to text it.
_LINK_SENTENCE_MAX_WORDS = 5


def _without_urls(text: str) -> Tuple[str, bool]:
    """Text with raw URLs removed (sentences that only pointed at one dropped); True if any."""
    if not _URL.search(text):
        return text, False
    kept = []
    for sentence in SENTENCE_END.split(text):
        if not _URL.search(sentence):
            kept.append(sentence)
            continue
        rest = re.sub(r"\s+", " ", _URL_WITH_PREPOSITION.sub("", sentence)).strip()
        rest = re.sub(r"\s+([.,;:!?])", r"\1", rest)
        rest = re.sub(r"[\s:;,(-]+([.!?]?)$", r"\1", rest).strip()
        if len(re.findall(r"[A-Za-z']+", rest)) > _LINK_SENTENCE_MAX_WORDS:
            kept.append(rest if rest.endswith((".", "!", "?")) else rest + ".")
    return " ".join(kept), True


def _spoken_date(match: re.Match[str]) -> str:
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        return match.group(0)
    spoken = f"{_MONTHS[month - 1]} {day}"
    return spoken if year == time.localtime().tm_year else f"{spoken}, {year}"


def _spelled(characters: str, group: int) -> str:
    """Characters one by one, in comma-separated groups so TTS pauses between them."""
    if len(characters) <= group + 2:
        return " ".join(characters)
    chunks = [characters[i : i + group] for i in range(0, len(characters), group)]
    return ", ".join(" ".join(chunk) for chunk in chunks)


def _spoken_phone(match: re.Match[str]) -> str:
    try:
        number = phonenumbers.parse(match.group(0))
    except phonenumbers.NumberParseException:
        return _spelled(match.group(0)[1:], 3)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return ", ".join(" ".join(group) for group in re.findall(r"\d+", international))


def _spoken_token(match: re.Match[str]) -> str:
    token = match.group(0)
    has_digit = any(ch.isdigit() for ch in token)
    if token.isdigit() and len(token) >= 5:
        return _spelled(token, 4)
    if has_digit and len(token) >= 6 and any(ch.isalpha() for ch in token):
        return _spelled(token.upper(), 4)
    return token


def speak_numbers(text: str) -> str:
    """Numbers as a caller should hear them.

    Order numbers, tracking codes and other ids are read character by character ("order
    1 2 3 4 5", not "twelve thousand…"), long ones in groups; phone numbers in their usual
    groups; ISO dates as "November 26". Amounts, times and numbers under five digits are left
    to the speech engine, which reads those well.
    """
    text = _ISO_DATE.sub(_spoken_date, text)
    text = _E164.sub(_spoken_phone, text)
    return _TOKEN.sub(_spoken_token, text)


def _sentences(text: str) -> str:
    """One line of speech from multi-line text: list items and lines become sentences."""
    lines = []
    for raw in text.splitlines():
        line = LIST_MARKER.sub("", raw).strip()
        if not line:
            continue
        lines.append(line if line[-1] in ".!?:;," else line + ".")
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def plain_speech(text: str) -> Tuple[str, bool]:
    """Text as one line of speakable sentences: no markdown, list markers, emoji or URLs (a
    sentence that only pointed at a link is dropped). Numbers are left as written.

    Returns the speech and whether a link was removed (so the caller can be offered it by text).
    """
    had_link = bool(MARKDOWN_LINK.search(text))
    text = strip_markdown(text, keep_link_urls=False)
    text, had_raw_url = _without_urls(_sentences(text))
    text = re.sub(r"\s+([.,;:!?])", r"\1", _sentences(without_emoji(text)))
    text = re.sub(r"\(\s*\)", "", text)
    return re.sub(r"\s{2,}", " ", text).strip(), had_link or had_raw_url


def spoken_text(text: str) -> Tuple[str, bool]:
    """Designers' text as speech: :func:`plain_speech`, with numbers spoken sensibly."""
    speech, had_link = plain_speech(text)
    return speak_numbers(speech), had_link


def spoken_choices(titles: Sequence[str]) -> str:
    """Buttons as a spoken invitation: "You can say A, B, or C." """
    names = [name for name in (spoken_text(title)[0].rstrip(".") for title in titles) if name]
    if not names:
        return ""
    if len(names) == 1:
        listed = names[0]
    elif len(names) == 2:
        listed = f"{names[0]} or {names[1]}"
    else:
        listed = ", ".join(names[:-1]) + f", or {names[-1]}"
    return f"You can say {listed}."


def render_voice_message(message: BotMessage) -> str:
    """What the caller hears for one bot message ("" when there is nothing to say).

    ``custom`` payloads are never spoken: the voice connector acts on the ones meant for it
    (call control) and other channels' payloads mean nothing on a call.
    """
    parts = []
    speech, had_link = spoken_text(message.text) if message.text else ("", False)
    if speech:
        parts.append(speech)
    if message.buttons:
        parts.append(spoken_choices([button.title for button in message.buttons]))
    if had_link:
        parts.append(VOICE_LINK_OFFER)
    if message.image:
        parts.append(VOICE_MEDIA_OFFER)
    if message.attachment:
        parts.append(VOICE_ATTACHMENT_OFFER)
    return " ".join(part for part in parts if part)


def render_voice(messages: Iterable[BotMessage]) -> str:
    """A whole turn as one utterance (the voice connector streams message by message with
    :func:`render_voice_message`; this is the same speech, joined)."""
    return " ".join(text for text in map(render_voice_message, messages) if text)
