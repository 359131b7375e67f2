"""The one place that turns Rasa's bot messages into each channel's natural form.

Rasa hands an output channel one dict per bot message (``text``, ``buttons``, ``image``,
``custom``, ``attachment``, ``elements``, ``quick_replies``). Connectors parse it once, at the
edge, into a :class:`BotMessage`, and render a turn's messages with the function for their
channel:

- :func:`render_voice` for VAPI: plain speakable sentences (no markdown, emoji or raw URLs;
  buttons spoken as choices);
- :func:`render_sms` for Twilio: as few SMS as sensible within a length limit, GSM-7 where a safe
  substitution exists, buttons as numbered options, images as MMS media;
- :func:`render_chat` for the web chat: the rich form (markdown, buttons, images, custom).

Designers' ``channel:`` response variations are chosen by Rasa before a message gets here (by the
output channel's ``name()``); rendering still applies to whatever they wrote.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import phonenumbers


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
        return cls(
            text=text,
            buttons=buttons,
            image=str(message["image"]) if message.get("image") else None,
            attachment=str(attachment) if isinstance(attachment, str) and attachment else None,
            custom=dict(custom) if isinstance(custom, Mapping) else None,
            delivered_on=(
                str(message["channel"])
                if message.get("channel") in ("voice", "sms", "chat")
                else None
            ),
        )

    def is_for(self, channel: str) -> bool:
        """Whether a live ``channel`` ("voice", "sms", "chat") should deliver this message: not
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
        return result


@dataclass
class TurnOutput:
    """Everything a turn sent to one output channel, in order."""

    messages: List[BotMessage] = field(default_factory=list)

    def add(self, message: Mapping[str, Any]) -> BotMessage:
        parsed = BotMessage.from_rasa(message)
        self.messages.append(parsed)
        return parsed


_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((\S+?)\)")
_MARKDOWN_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MARKDOWN_BULLET = re.compile(r"^\s*[-*+]\s+", re.MULTILINE)


def strip_markdown(text: str, keep_link_urls: bool = True) -> str:
    """Plain text from the small markdown subset designers use in responses.

    ``[label](url)`` becomes ``label (url)`` when ``keep_link_urls``, else just ``label``.
    """
    text = _MARKDOWN_LINK.sub(
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


# ---------------------------------------------------------------------------------------------
# Voice (VAPI)
# ---------------------------------------------------------------------------------------------

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
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
#: Characters TTS engines read out by name or garble: emoji and their joiners/modifiers.
_EMOJI_EXTRAS = {"\u200d", "\ufe0e", "\ufe0f", "\u20e3"}
#: Sentences left with at most this many words once their URL is gone ("Track it here:") say
#: nothing without the link, so they are dropped in favour of the offer to text it.
_LINK_SENTENCE_MAX_WORDS = 5


def _without_emoji(text: str) -> str:
    return "".join(
        ch
        for ch in text
        if ch not in _EMOJI_EXTRAS
        and unicodedata.category(ch) not in ("So", "Cs", "Co")
        and not ("\U0001f3fb" <= ch <= "\U0001f3ff")
    )


def _without_urls(text: str) -> Tuple[str, bool]:
    """Text with raw URLs removed (sentences that only pointed at one dropped); True if any."""
    if not _URL.search(text):
        return text, False
    kept = []
    for sentence in _SENTENCE_END.split(text):
        if not _URL.search(sentence):
            kept.append(sentence)
            continue
        rest = re.sub(r"\s+", " ", _URL_WITH_PREPOSITION.sub("", sentence)).strip()
        rest = re.sub(r"\s+([.,;:!?])", r"\1", rest)
        rest = re.sub(r"[\s:;,(-]+([.!?]?)$", r"\1", rest).strip()
        if len(re.findall(r"[A-Za-z']+", rest)) > _LINK_SENTENCE_MAX_WORDS:
            kept.append(rest if rest.endswith((".", "!", "?")) else rest + ".")
    return " ".join(kept), True


def _spoken_date(match: re.Match) -> str:
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


def _spoken_phone(match: re.Match) -> str:
    try:
        number = phonenumbers.parse(match.group(0))
    except phonenumbers.NumberParseException:
        return _spelled(match.group(0)[1:], 3)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return ", ".join(" ".join(group) for group in re.findall(r"\d+", international))


def _spoken_token(match: re.Match) -> str:
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
        line = raw.strip()
        if line.startswith("- "):
            line = line[2:].strip()
        if not line:
            continue
        lines.append(line if line[-1] in ".!?:;," else line + ".")
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def spoken_text(text: str) -> Tuple[str, bool]:
    """Designers' text as speech: no markdown, emoji or URLs, numbers spoken sensibly.

    Returns the speech and whether a link was removed (so the caller can be offered it by text).
    """
    had_link = bool(_MARKDOWN_LINK.search(text))
    text = strip_markdown(text, keep_link_urls=False)
    text, had_raw_url = _without_urls(text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", _sentences(_without_emoji(text)))
    return speak_numbers(text), had_link or had_raw_url


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


# ---------------------------------------------------------------------------------------------
# SMS (Twilio)
# ---------------------------------------------------------------------------------------------

#: Twilio's limit for one message's body; longer text is split into several messages.
SMS_MAX_LENGTH = 1600
#: More media than this in one MMS is refused by Twilio, so further images go in more messages.
MMS_MAX_MEDIA = 10

# GSM 03.38: the characters an SMS can carry at 7 bits each (160 per single segment). Any other
# character switches the whole message to UCS-2 (70 per segment), roughly tripling its cost.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Characters of the GSM-7 extension table: allowed, but each takes two septets.
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

#: Typographic characters with a GSM-7 equivalent that means the same to a reader. Accented
#: letters outside GSM-7 are left alone: replacing them would change how words are spelled.
GSM7_SUBSTITUTIONS = str.maketrans(
    {
        "\u2018": "'",  # ‘
        "\u2019": "'",  # ’
        "\u201a": "'",  # ‚
        "\u201b": "'",  # ‛
        "\u2032": "'",  # ′
        "`": "'",
        "\u00b4": "'",  # ´
        "\u201c": '"',  # “
        "\u201d": '"',  # ”
        "\u201e": '"',  # „
        "\u201f": '"',  # ‟
        "\u2033": '"',  # ″
        "\u00ab": '"',  # «
        "\u00bb": '"',  # »
        "\u2010": "-",  # ‐
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # ‒
        "\u2013": "-",  # –
        "\u2014": "-",  # —
        "\u2015": "-",  # ―
        "\u2212": "-",  # −
        "\u2022": "-",  # •
        "\u00b7": "-",  # ·
        "\u2026": "...",  # …
        "\u00a0": " ",  # no-break space
        "\u2002": " ",
        "\u2003": " ",
        "\u2007": " ",
        "\u2009": " ",
        "\u200a": " ",
        "\u202f": " ",
        "\t": " ",
        "\u200b": "",  # zero-width space, joiners and BOM: invisible, but force UCS-2
        "\u200c": "",
        "\u200d": "",
        "\u2060": "",
        "\ufeff": "",
    }
)


def gsm7_safe(text: str) -> str:
    """``text`` with typographic characters replaced by their GSM-7 look-alikes."""
    return text.translate(GSM7_SUBSTITUTIONS)


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


@dataclass(frozen=True)
class SmsSegments:
    """How carriers will bill a message body: its encoding and number of segments."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_segments(body: str) -> SmsSegments:
    """Segments of ``body``: GSM-7 160 alone / 153 concatenated, UCS-2 70 / 67."""
    if is_gsm7(body):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // multi)
    return SmsSegments(encoding=encoding, units=units, segments=segments)


def split_sms(text: str, max_length: int = SMS_MAX_LENGTH) -> List[str]:
    """``text`` in as few pieces of at most ``max_length`` characters as possible.

    Pieces break between paragraphs when they can, else between lines, else between words;
    only a single word longer than ``max_length`` (a very long URL) is ever cut.
    """
    if not 1 <= max_length <= SMS_MAX_LENGTH:
        raise ValueError(f"max_length must be 1..{SMS_MAX_LENGTH}, got {max_length}")
    text = text.strip()
    if len(text) <= max_length:
        return [text] if text else []
    pieces: List[str] = []
    current = ""
    for separator, unit in _sms_units(text, max_length):
        candidate = f"{current}{separator}{unit}" if current else unit
        if len(candidate) <= max_length:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while len(unit) > max_length:
            pieces.append(unit[:max_length])
            unit = unit[max_length:]
        current = unit
    if current:
        pieces.append(current)
    return pieces


def _sms_units(text: str, max_length: int) -> Iterator[Tuple[str, str]]:
    """(separator, unit) pairs: paragraphs, falling back to lines and then words when a
    paragraph or line does not fit in one piece."""
    for p_index, paragraph in enumerate(re.split(r"\n\s*\n", text)):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        p_separator = "\n\n" if p_index else ""
        if len(paragraph) <= max_length:
            yield p_separator, paragraph
            continue
        for l_index, line in enumerate(paragraph.split("\n")):
            l_separator = p_separator if l_index == 0 else "\n"
            if len(line) <= max_length:
                yield l_separator, line
                continue
            for w_index, word in enumerate(line.split()):
                yield (l_separator if w_index == 0 else " "), word


@dataclass(frozen=True)
class SmsMessage:
    """One outgoing Twilio message: a body (possibly long: Twilio concatenates it), MMS media,
    and extra Messages API parameters a designer's ``custom`` payload asked for."""

    body: str = ""
    media_urls: Tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def segments(self) -> SmsSegments:
        return sms_segments(self.body)


@dataclass(frozen=True)
class SmsRendering:
    """A turn rendered for SMS: the messages to send, and the buttons offered by number (what
    the customer's next "1" or "Refund" means)."""

    messages: Tuple[SmsMessage, ...] = ()
    buttons: Tuple[Button, ...] = ()


#: Messages API parameters a ``custom`` payload may set besides ``body`` and ``media_url``.
SMS_CUSTOM_PARAMS = frozenset(
    {
        "content_sid",
        "content_variables",
        "persistent_action",
        "send_as_mms",
        "shorten_urls",
        "smart_encoded",
        "validity_period",
    }
)


def sms_text(text: str) -> str:
    """A designer's (or an LLM's) text as plain SMS text: markdown stripped with link URLs kept,
    GSM-7 look-alikes substituted, runs of spaces and blank lines collapsed."""
    text = gsm7_safe(strip_markdown(text, keep_link_urls=True))
    text = re.sub(r"[ ]{2,}", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _sms_custom(custom: Mapping[str, Any]) -> Optional[SmsMessage]:
    """A designer's Twilio payload (``body``, ``media_url``, Messages API parameters), sent as
    given; payloads meant for other channels (``call_control``, chat widgets) give None."""
    body = custom.get("body")
    media = custom.get("media_url") or ()
    if isinstance(media, str):
        media = (media,)
    params = {key: value for key, value in custom.items() if key in SMS_CUSTOM_PARAMS}
    if not isinstance(body, str) and not media and "content_sid" not in params:
        return None
    return SmsMessage(
        body=body if isinstance(body, str) else "",
        media_urls=tuple(str(url) for url in media),
        params=params,
    )


def render_sms(messages: Sequence[BotMessage], max_length: int = SMS_MAX_LENGTH) -> SmsRendering:
    """A turn's bot messages as few SMS as sensible.

    Texts are joined (blank line between messages) and split only when longer than
    ``max_length``, never inside a word. Buttons become "Reply 1 for …, 2 for …" numbered across
    the turn; images become MMS media on the first message of their group; attachments become
    links; a ``custom`` Twilio payload is its own message, in order, untouched.
    """
    rendered: List[SmsMessage] = []
    offered: List[Button] = []
    texts: List[str] = []
    media: List[str] = []

    def flush() -> None:
        bodies = split_sms("\n\n".join(texts), max_length) if texts else []
        if not bodies and media:
            bodies = [""]
        for index, body in enumerate(bodies):
            attached = tuple(media[:MMS_MAX_MEDIA]) if index == 0 else ()
            rendered.append(SmsMessage(body=body, media_urls=attached))
        for start in range(MMS_MAX_MEDIA, len(media), MMS_MAX_MEDIA):
            rendered.append(SmsMessage(media_urls=tuple(media[start : start + MMS_MAX_MEDIA])))
        texts.clear()
        media.clear()

    for message in messages:
        if message.custom is not None:
            passthrough = _sms_custom(message.custom)
            if passthrough is not None:
                flush()
                rendered.append(passthrough)
        block = sms_text(message.text) if message.text else ""
        if message.buttons:
            options = []
            for button in message.buttons:
                offered.append(button)
                options.append(f"{len(offered)} for {sms_text(button.title)}")
            prompt = "Reply " + ", ".join(options) + "."
            block = f"{block}\n{prompt}" if block else prompt
        if message.attachment:
            block = f"{block}\n{message.attachment}" if block else message.attachment
        if block:
            texts.append(block)
        if message.image:
            media.append(message.image)
    flush()
    return SmsRendering(messages=tuple(rendered), buttons=tuple(offered))


def match_button_reply(text: str, buttons: Sequence[Button]) -> Optional[Button]:
    """The offered button a reply picks: its number ("1", "1.", " 2 ") or its title, ignoring
    case and GSM-7 substitutions; None when the reply is anything else."""
    reply = gsm7_safe(text).strip().rstrip(".!").strip()
    if not reply or not buttons:
        return None
    if reply.isdigit():
        number = int(reply)
        return buttons[number - 1] if 1 <= number <= len(buttons) else None
    wanted = reply.casefold()
    for button in buttons:
        if sms_text(button.title).casefold() == wanted:
            return button
    return None


# ---------------------------------------------------------------------------------------------
# Chat (web chat widget)
# ---------------------------------------------------------------------------------------------

#: Link schemes the chat turns into anchors; anything else (``javascript:``, ``data:``) stays
#: plain text, so a response or an LLM answer can never put script into the page.
CHAT_LINK_SCHEMES = ("https://", "http://", "mailto:", "tel:")

_HTML_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}
)
_CHAT_CODE = re.compile(r"`([^`\n]+)`")
_CHAT_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_CHAT_BARE_URL = re.compile(r"(?<![\w/\"'=])(https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]])")
_CHAT_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_CHAT_EMPHASIS = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_CHAT_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_CHAT_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


def escape_html(text: str) -> str:
    """``text`` safe to place in HTML content and in quoted attribute values."""
    return text.translate(_HTML_ESCAPES)


def _chat_inline(text: str) -> str:
    """One line of markdown as safe HTML: code, links, bare URLs, bold and italics."""
    protected: List[str] = []

    def keep(fragment: str) -> str:
        protected.append(fragment)
        return f"\x00{len(protected) - 1}\x00"

    def link(label: str, url: str) -> str:
        if not url.lower().startswith(CHAT_LINK_SCHEMES):
            return keep(escape_html(label))
        return keep(
            f'<a href="{escape_html(url)}" target="_blank" rel="noopener noreferrer">'
            f"{escape_html(label)}</a>"
        )

    text = text.replace("\x00", "")
    text = _CHAT_CODE.sub(lambda m: keep(f"<code>{escape_html(m.group(1))}</code>"), text)
    text = _CHAT_LINK.sub(lambda m: link(m.group(1), m.group(2)), text)
    text = _CHAT_BARE_URL.sub(lambda m: link(m.group(1), m.group(1)), text)
    text = escape_html(text)
    text = _CHAT_STRONG.sub(r"<strong>\2</strong>", text)
    text = _CHAT_EMPHASIS.sub(r"<em>\2</em>", text)
    return _CHAT_PLACEHOLDER.sub(lambda m: protected[int(m.group(1))], text)


def chat_html(markdown: str) -> str:
    """The small markdown subset designers and the LLM use, as HTML the widget can insert.

    Everything is escaped first and only the tags made here (``p``, ``br``, ``ul``/``li``,
    ``strong``, ``em``, ``code``, ``a`` to http(s)/mailto/tel) can appear, so bot text from any
    source is safe to show.
    """
    blocks: List[str] = []
    for paragraph in re.split(r"\n\s*\n", markdown.strip()):
        lines: List[str] = []
        items: List[str] = []
        for line in paragraph.split("\n") + [""]:
            bullet = _CHAT_BULLET.match(line)
            if bullet:
                items.append(f"<li>{_chat_inline(bullet.group(1))}</li>")
                continue
            if items:
                if lines:
                    blocks.append("<p>" + "<br>".join(lines) + "</p>")
                    lines = []
                blocks.append("<ul>" + "".join(items) + "</ul>")
                items = []
            if line.strip():
                lines.append(_chat_inline(line))
        if lines:
            blocks.append("<p>" + "<br>".join(lines) + "</p>")
    return "".join(blocks)


def _chat_button(button: Button) -> Dict[str, str]:
    """A button as the widget shows it: one whose payload is a web address opens that page
    (a "Track package" link) instead of sending the address to the assistant as a message."""
    if button.payload.lower().startswith(("https://", "http://")):
        return {"title": button.title, "url": button.payload}
    return {"title": button.title, "payload": button.payload}


def render_chat(message: BotMessage) -> Dict[str, Any]:
    """A bot message in the web chat's rich form (the ``bot`` message of the chat protocol).

    ``text`` keeps the markdown for clients that render it themselves; ``html`` is the same text
    made safe to insert. Buttons, image, attachment and custom payloads pass through; voice
    call-control payloads mean nothing in a chat window and are dropped.
    """
    rendered: Dict[str, Any] = {"text": message.text, "html": chat_html(message.text)}
    if message.buttons:
        rendered["buttons"] = [_chat_button(b) for b in message.buttons]
    if message.image:
        rendered["image"] = message.image
    if message.attachment:
        rendered["attachment"] = message.attachment
    if message.custom is not None and "call_control" not in message.custom:
        rendered["custom"] = message.custom
    return rendered
