"""Chat: the web chat widget's rich form (markdown kept, safe HTML, buttons, media)."""

from __future__ import annotations

import re
from typing import Any, Dict, List

from omnichannel.rendering.messages import BotMessage, Button

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
