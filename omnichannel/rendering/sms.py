"""SMS: what a texter receives (Twilio bodies, segments, numbered options, MMS media)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from omnichannel.rendering.messages import (
    LIST_MARKER,
    BotMessage,
    Button,
    strip_markdown,
    without_emoji,
)

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


#: Characters per segment: a message alone, and each segment of a concatenated one.
GSM7_SINGLE_SEGMENT, GSM7_SEGMENT = 160, 153
UCS2_SINGLE_SEGMENT, UCS2_SEGMENT = 70, 67


def sms_segments(body: str) -> SmsSegments:
    """Segments of ``body``: GSM-7 160 alone / 153 concatenated, UCS-2 70 / 67."""
    if is_gsm7(body):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in body)
        single, multi, encoding = GSM7_SINGLE_SEGMENT, GSM7_SEGMENT, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = UCS2_SINGLE_SEGMENT, UCS2_SEGMENT, "UCS-2"
    segments = 1 if units <= single else -(-units // multi)
    return SmsSegments(encoding=encoding, units=units, segments=segments)


def sms_units(text: str) -> int:
    """Length of ``text`` in GSM-7 characters' worth of segment space.

    UCS-2 text holds 67 characters per segment instead of 153, so each of its characters counts
    153/67 units; a text within 2 × 153 units then fits two segments either way.
    """
    counted = sms_segments(text)
    if counted.encoding == "GSM-7":
        return counted.units
    return -(-counted.units * GSM7_SEGMENT // UCS2_SEGMENT)


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
    """One outgoing Twilio Messages API message: a body (possibly long: Twilio concatenates an
    SMS), media, and extra Messages API parameters a designer's ``custom`` payload asked for.
    WhatsApp's renderer (:mod:`omnichannel.rendering.whatsapp`) produces the same shape, so
    one sender, outbox and reconcile serve both channels."""

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
    GSM-7 look-alikes substituted, runs of spaces and blank lines collapsed. Emoji a designer
    wrote are kept (they cost UCS-2; the response check warns about that)."""
    text = gsm7_safe(strip_markdown(text, keep_link_urls=True))
    text = re.sub(r"[ ]{2,}", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def plain_sms(text: str) -> str:
    """Text an action composed (an LLM answer) as the plainest SMS: :func:`sms_text`, with list
    markers as "- " and emoji dropped so that one pictograph cannot triple its cost."""
    return sms_text(without_emoji(LIST_MARKER.sub("- ", text)))


def custom_message(custom: Mapping[str, Any]) -> Optional[SmsMessage]:
    """A designer's Twilio payload (``body``, ``media_url``, Messages API parameters), sent as
    given by SMS or WhatsApp; payloads meant for other channels (``call_control``, chat
    widgets) give None."""
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
            passthrough = custom_message(message.custom)
            if passthrough is not None:
                flush()
                rendered.append(passthrough)
        block = sms_text(message.text) if message.text else ""
        if message.author and block:
            # A person's reply says who wrote it: the texter cannot tell otherwise.
            block = f"{sms_text(message.author)}: {block}"
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
