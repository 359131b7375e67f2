"""WhatsApp: what a customer on WhatsApp receives (Twilio's Messages API for WhatsApp).

WhatsApp is richer than SMS and poorer than the web chat:

- **Formatting** is WhatsApp's own: ``*bold*``, ``_italic_``, ``~strike~``, ```` ```mono``` ````
  (Twilio's WhatsApp message-features page). Designers write the markdown subset every channel
  reads, so ``**bold**`` becomes ``*bold*``, a markdown ``*italic*`` becomes ``_italic_``,
  ``[label](url)`` becomes ``label (url)`` (WhatsApp shows a preview of a bare link), headings
  become bold lines and HTML tags are dropped: nothing meant for another renderer leaks through.
- **Length**: Twilio refuses a ``Body`` above 1,600 characters (error 21617) although WhatsApp
  itself takes 4,096, so longer text is split, between paragraphs when it can be; a message
  carrying tappable options (Content API body) or a caption holds at most 1,024.
- **Buttons** become tappable: up to 3 whose titles fit 20 characters as a ``twilio/quick-reply``
  (WhatsApp allows only 3 in a session message that was not approved as a template), up to 10
  whose titles fit 24 as a ``twilio/list-picker``, each sent with a Content SID created for it
  (:mod:`omnichannel.twilio_content`). Anything else (more options, longer titles, or the
  Content API failing at send time) falls back to the numbered text SMS uses, which the
  connector maps back to the payload the same way. A button whose payload is a web address is a
  link in the text (a call-to-action button would need an approved template).
- **Pictures and files**: one attachment per WhatsApp message (further ones are ignored by
  Twilio), an image's caption is the text when it fits; documents get no caption.

A rendered message is an :class:`~omnichannel.rendering.sms.SmsMessage`, the one shape of a
Twilio Messages API message every sender, outbox and reconcile handles; an interactive one
carries :data:`SESSION_CONTENT` in its parameters (the Content API definition and the numbered
text to send instead), resolved to ``content_sid`` by the sender.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from omnichannel.rendering.messages import MARKDOWN_LINK, BotMessage, Button
from omnichannel.rendering.sms import SmsMessage, custom_message, split_sms

#: Twilio's limit for one ``Body`` (error 21617); WhatsApp's own is 4,096.
WHATSAPP_MAX_BODY = 1600
#: A Content API body (quick reply, list picker) and a media caption hold at most this.
CONTENT_BODY_MAX = 1024
#: Quick replies WhatsApp shows in a session message that is not an approved template.
QUICK_REPLY_MAX_IN_SESSION = 3
#: Meta's cap on a reply button's title (Twilio's own is not documented: WhatsApp's applies).
QUICK_REPLY_TITLE_MAX = 20
#: twilio/list-picker: items, item text, item id (Twilio's Content API page).
LIST_PICKER_MAX_ITEMS = 10
LIST_ITEM_MAX = 24
CONTENT_ID_MAX = 200
#: The label of the button that opens a list picker.
LIST_BUTTON = "Choose"

#: The parameter of an interactive message: ``{"types": {…}, "fallback": "…"}``.
SESSION_CONTENT = "session_content"
QUICK_REPLY = "twilio/quick-reply"
LIST_PICKER = "twilio/list-picker"

#: Media types WhatsApp delivers (Twilio's WhatsApp media guidance): images up to 5 MB, the
#: rest up to 16 MB. Anything else is refused by Twilio (the response check flags it).
WHATSAPP_MEDIA_TYPES = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/webp": "image",
    "audio/ogg": "audio",
    "audio/amr": "audio",
    "audio/3gpp": "audio",
    "audio/aac": "audio",
    "audio/mpeg": "audio",
    "audio/mp4": "audio",
    "video/mp4": "video",
    "video/3gpp": "video",
    "application/pdf": "document",
    "application/msword": "document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "document",
    "application/vnd.ms-powerpoint": "document",
    "application/vnd.ms-excel": "document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "document",
    "text/vcard": "contact",
    "text/x-vcard": "contact",
}
WHATSAPP_IMAGE_MAX_BYTES = 5 * 1024 * 1024
WHATSAPP_MEDIA_MAX_BYTES = 16 * 1024 * 1024

_CODE_BLOCK = re.compile(r"```(.+?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*[*+]\s+", re.MULTILINE)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_URL = re.compile(r"https?://[^\s<>]+")
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


def whatsapp_text(markdown: str) -> str:
    """The markdown subset designers (and the LLM) write, in WhatsApp's formatting.

    Code and links are set aside first so that an underscore in a URL or an asterisk in code
    never becomes formatting; then bold is taken before italics (markdown's ``*x*`` is
    WhatsApp's ``_x_``, its ``**x**`` WhatsApp's ``*x*``).
    """
    kept: List[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return f"\x00{len(kept) - 1}\x00"

    text = markdown.replace("\x00", "").replace("\r\n", "\n")
    text = _HTML_TAG.sub("", text)
    text = _CODE_BLOCK.sub(lambda m: keep(f"```{m.group(1).strip()}```"), text)
    text = _INLINE_CODE.sub(lambda m: keep(f"```{m.group(1)}```"), text)

    def link(match: re.Match[str]) -> str:
        label, url = match.group(1).strip(), match.group(2)
        if label == url or not label:
            return keep(url)
        return f"{label} ({keep(url)})"

    text = MARKDOWN_LINK.sub(link, text)
    text = _URL.sub(lambda m: keep(m.group(0)), text)
    text = _HEADING.sub(lambda m: f"\x01{m.group(1)}\x02", text)
    text = _BULLET.sub("- ", text)
    text = _STRONG.sub(lambda m: f"\x01{m.group(2)}\x02", text)
    text = _EMPHASIS.sub(lambda m: f"_{m.group(2)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = text.replace("\x01", "*").replace("\x02", "*")
    text = _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _is_link(button: Button) -> bool:
    return button.payload.lower().startswith(("https://", "http://"))


def numbered_options(buttons: Sequence[Button], start: int = 1) -> str:
    """Options a customer answers by number or title, where tapping is not possible."""
    lines = [f"*{start + i}* {whatsapp_text(b.title)}" for i, b in enumerate(buttons)]
    return "\n".join(lines + ["Reply with the number of your choice."])


@dataclass(frozen=True)
class Interactive:
    """Tappable options as a Content API definition (session only, never approved)."""

    content_type: str
    body: str
    buttons: Tuple[Button, ...]

    def types(self) -> Dict[str, Any]:
        """The ``types`` of a Content API ``POST /v1/Content``."""
        if self.content_type == QUICK_REPLY:
            actions = [{"title": b.title, "id": b.payload} for b in self.buttons]
            return {QUICK_REPLY: {"body": self.body, "actions": actions}}
        # Twilio's list-picker page marks an item's description required (at most 72
        # characters); a Rasa button has none, so the item repeats its title.
        items = [{"item": b.title, "id": b.payload, "description": b.title} for b in self.buttons]
        return {LIST_PICKER: {"body": self.body, "button": LIST_BUTTON, "items": items}}

    @property
    def key(self) -> str:
        """A digest of the definition: one Content resource serves every send of it."""
        canonical = json.dumps(self.types(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def interactive_for(body: str, buttons: Sequence[Button]) -> Optional[Interactive]:
    """The tappable form of ``buttons`` under ``body``, or None when WhatsApp cannot show them
    so (no text to show above them, a body too long, too many options, a title too long)."""
    if not body or len(body) > CONTENT_BODY_MAX or not buttons:
        return None
    if any(len(b.payload) > CONTENT_ID_MAX or not b.title.strip() for b in buttons):
        return None
    titles = [b.title.strip() for b in buttons]
    if len(set(titles)) != len(titles):
        return None  # WhatsApp wants titles unique within a message
    if len(buttons) <= QUICK_REPLY_MAX_IN_SESSION and all(
        len(t) <= QUICK_REPLY_TITLE_MAX for t in titles
    ):
        kind = QUICK_REPLY
    elif len(buttons) <= LIST_PICKER_MAX_ITEMS and all(len(t) <= LIST_ITEM_MAX for t in titles):
        kind = LIST_PICKER
    else:
        return None
    trimmed = tuple(Button(t, b.payload) for t, b in zip(titles, buttons, strict=True))
    return Interactive(kind, body, trimmed)


def session_content(message: SmsMessage) -> Optional[Mapping[str, Any]]:
    """The interactive definition a rendered message carries, if any."""
    content = message.params.get(SESSION_CONTENT)
    return content if isinstance(content, Mapping) else None


@dataclass(frozen=True)
class WhatsAppRendering:
    """A turn rendered for WhatsApp: the messages to send, and the options offered (what a tap's
    payload or a typed "1" means)."""

    messages: Tuple[SmsMessage, ...] = ()
    buttons: Tuple[Button, ...] = ()


def _text_messages(text: str) -> List[SmsMessage]:
    return [SmsMessage(body=part) for part in split_sms(text, WHATSAPP_MAX_BODY)]


def _with_options(text: str, buttons: Sequence[Button], first_number: int) -> List[SmsMessage]:
    """Text followed by options: tappable when WhatsApp can show them, numbered otherwise."""
    numbered = numbered_options(buttons, first_number)
    parts = split_sms(text, WHATSAPP_MAX_BODY) if text else []
    last = parts.pop() if parts else ""
    if len(last) > CONTENT_BODY_MAX:
        parts.append(last)
        last = ""
    interactive = interactive_for(last, buttons)
    messages = [SmsMessage(body=part) for part in parts]
    if interactive is None:
        return messages + _text_messages(f"{last}\n\n{numbered}" if last else numbered)
    fallback = f"{last}\n\n{numbered}"
    params = {
        SESSION_CONTENT: {
            "types": interactive.types(),
            "key": interactive.key,
            "fallback": fallback,
        }
    }
    return messages + [SmsMessage(body=last, params=params)]


def _media_message(url: str, caption: str = "") -> SmsMessage:
    return SmsMessage(body=caption, media_urls=(url,))


def render_whatsapp(messages: Sequence[BotMessage]) -> WhatsAppRendering:
    """A turn's bot messages as WhatsApp messages, one bot message at a time (WhatsApp shows
    each as its own bubble, and a tappable choice must stay with the text it answers)."""
    rendered: List[SmsMessage] = []
    offered: List[Button] = []
    for message in messages:
        if message.custom is not None:
            passthrough = custom_message(message.custom)
            if passthrough is not None:
                rendered.append(passthrough)
        text = whatsapp_text(message.text) if message.text else ""
        if message.author and text:
            # A person's reply says who wrote it, as on SMS.
            text = f"{whatsapp_text(message.author)}: {text}"
        links = [b for b in message.buttons if _is_link(b)]
        choices = [b for b in message.buttons if not _is_link(b)]
        if links:
            lines = [f"{whatsapp_text(b.title)}: {b.payload}" for b in links]
            text = "\n".join([text, *lines]) if text else "\n".join(lines)
        if message.image and not choices and text and len(text) <= CONTENT_BODY_MAX:
            rendered.append(_media_message(message.image, text))
            text = ""
        elif message.image:
            rendered.extend(_text_messages(text) if not choices else [])
            rendered.append(_media_message(message.image))
            text = "" if not choices else text
        if choices:
            rendered.extend(_with_options(text, choices, len(offered) + 1))
            offered.extend(choices)
        elif text:
            rendered.extend(_text_messages(text))
        if message.attachment:
            rendered.append(_media_message(message.attachment))
    return WhatsAppRendering(messages=tuple(rendered), buttons=tuple(offered))
