"""The response check and preview: every response of the domain rendered as each channel renders
it, and the silent failures a designer cannot see in ``rasa test`` caught by name.

``rasa data validate`` and ``rasa test`` never produce the bot's text, so they pass responses
that reach some customers as nothing or as something broken. For each response and each channel
(voice, SMS, WhatsApp, chat), this picks the variations Rasa could choose there (as Rasa's
``ResponseVariationFilter`` ranks them: a ``channel:`` variation above a ``condition:`` one; a
WhatsApp turn's output is named ``whatsapp``), renders them with the connectors' own renderers,
and reports:

- ``no-default``: no variation without a condition for the channel: when no condition holds (or,
  with only other channels' variations, always) the customer gets no reply at all;
- ``unknown-channel``: a ``channel:`` no output channel has (the names are ``vapi``,
  ``twilio_sms``, ``whatsapp``, ``webchat``), so the variation is never used;
- ``shadowed-condition``: a ``condition:`` variation without ``channel:`` that a channel never
  uses, because Rasa prefers that channel's unconditional variation;
- ``url-button``: a button whose payload is a web address on voice or SMS ("Reply 1 for …" would
  send the address to Rasa as the customer's message);
- ``sms-segments``: an SMS longer than ``max_sms_segments`` segments;
- ``sms-ucs2``: a character that pushes an SMS from GSM-7 into UCS-2 (70 instead of 160
  characters a segment), named;
- ``speech-url`` / ``speech-markdown``: a web address or markdown left in what a caller hears;
- ``says-nothing``: a variation that renders to nothing on a channel it is used on;
- ``whatsapp-emphasis``: ``*word*`` in a ``channel: whatsapp`` variation: every response is
  written in the same markdown, where ``*word*`` is italics (WhatsApp ``_word_``); bold is
  ``**word**`` (WhatsApp ``*word*``);
- ``whatsapp-buttons``: options WhatsApp cannot show as tappable (more than 10, or titles over
  20 characters for 3 or fewer, over 24 for a list): they arrive as numbered text;
- ``media-type``: a picture or file of a type the channel refuses (WhatsApp takes JPG, PNG and
  WebP images, MMS no WebP, the chat shows only images as pictures), judged by the URL's
  extension, as Twilio judges by the type the URL serves;
- ``template-…``: a ``metadata.whatsapp_template`` WhatsApp would not approve or Twilio not send
  (omnichannel/whatsapp_templates.py: a name of other than lowercase letters, digits and ``_``,
  an unknown category, a variable at the start or end of the text or two side by side, a
  variable without a sample, more than 1,024 characters with the samples), or one name declared
  by two responses with different text.

``python -m devtools.responses check`` (``make responses``, part of ``make test``) exits 1 with
one line per problem; ``python -m devtools.responses preview utter_x`` (``make preview
RESPONSE=utter_x``) prints the voice, SMS (segments, encoding), WhatsApp (bubbles, tappable
options, media, the template outside the window) and chat forms.
"""

from __future__ import annotations

import argparse
import mimetypes
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import yaml

from omnichannel.channels import CHAT, KIND_OF_OUTPUT, KINDS, OUTPUT_OF_KIND, SMS, VOICE, WHATSAPP
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import GSM7_BASIC, GSM7_EXTENDED, render_sms, sms_segments
from omnichannel.rendering.voice import render_voice_message
from omnichannel.rendering.whatsapp import (
    LIST_PICKER,
    QUICK_REPLY,
    WHATSAPP_MEDIA_TYPES,
    render_whatsapp,
    session_content,
)
from omnichannel.whatsapp_templates import declaration_of, template_problems

ROOT = Path(__file__).resolve().parent.parent
#: Default bound on one response's SMS, in segments (each 153 GSM-7 characters when joined).
DEFAULT_MAX_SMS_SEGMENTS = 4
#: Media each channel takes, by content type: WhatsApp's (omnichannel/rendering/whatsapp.py),
#: Twilio's MMS types that carriers deliver as they are (its "accepted content types for media"
#: page), and the pictures the chat widget shows (other files it shows as links).
CHANNEL_MEDIA_TYPES = {
    WHATSAPP: frozenset(WHATSAPP_MEDIA_TYPES),
    SMS: frozenset(
        {
            "image/jpeg",
            "image/gif",
            "image/png",
            "audio/mpeg",
            "audio/mp4",
            "audio/ogg",
            "audio/amr",
            "audio/3gpp",
            "video/mp4",
            "video/3gpp",
            "video/quicktime",
            "application/pdf",
            "text/vcard",
        }
    ),
    CHAT: frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"}),
}

Variation = Mapping[str, Any]

#: A web address: with a scheme, "www.", or a bare domain followed by a path ("acme.com/help").
_URL = re.compile(
    r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}/\S*", re.IGNORECASE
)
#: Markup a speech engine would read out: markdown emphasis, code, links, headings, list items,
#: quotes, tables, and HTML tags.
_MARKUP = re.compile(
    r"\*\*|__|`|\[[^\]]*\]\([^)]*\)|^\s*#{1,6}\s|^\s*[-*+>]\s|\|.*\||</?[a-z][^>]*>",
    re.MULTILINE | re.IGNORECASE,
)


@dataclass(frozen=True)
class Problem:
    response: str
    channel: Optional[str]
    code: str
    detail: str

    def __str__(self) -> str:
        where = f" [{self.channel}]" if self.channel else ""
        return f"{self.response}{where}: {self.code}: {self.detail}"


def load_responses(domain: Path) -> Dict[str, List[Variation]]:
    """The ``responses:`` of a domain file, or of every YAML file of a domain directory."""
    files = (
        sorted(domain.rglob("*.yml")) + sorted(domain.rglob("*.yaml"))
        if domain.is_dir()
        else [domain]
    )
    responses: Dict[str, List[Variation]] = {}
    for path in files:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for name, variations in (content.get("responses") or {}).items():
            responses.setdefault(name, []).extend(variations or [])
    return responses


def candidates(variations: Sequence[Variation], kind: str) -> List[Variation]:
    """The variations Rasa can choose on a channel kind, in the order of its ranking: a
    ``channel:`` variation outranks one without; without one for the channel, the variations
    without ``channel:`` (conditional or not) are used."""
    output = OUTPUT_OF_KIND[kind]
    own = [v for v in variations if v.get("channel") == output]
    shared = [v for v in variations if v.get("channel") is None]
    if any(not v.get("condition") for v in own):
        return own
    return own + shared


#: ``*word*`` (not ``**word**``): markdown's italics.
_SINGLE_STAR = re.compile(r"(?<![*\w])\*(?=\S)[^*\n]+?(?<=\S)\*(?![*\w])")


def _message(variation: Variation) -> BotMessage:
    return BotMessage.from_rasa(
        {k: v for k, v in variation.items() if k not in ("channel", "condition", "metadata")}
    )


def render_for(kind: str, variation: Variation) -> str:
    """A variation as the customer on ``kind`` receives it: the speech, the SMS bodies (blank
    line between messages), the chat message's markdown."""
    message = _message(variation)
    if kind == VOICE:
        return render_voice_message(message)
    if kind == SMS:
        return "\n\n".join(sms.body for sms in render_sms([message]).messages)
    if kind == WHATSAPP:
        return "\n\n".join(m.body for m in render_whatsapp([message]).messages if m.body)
    return str(render_chat(message).get("text") or "")


def media_type(url: str) -> Optional[str]:
    """The content type a media URL's extension names (None when it names none)."""
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    return guessed


def _media_problems(name: str, kind: str, message: BotMessage) -> Iterator[Problem]:
    accepted = CHANNEL_MEDIA_TYPES.get(kind)
    if accepted is None:
        return
    for field, url in (("image", message.image), ("attachment", message.attachment)):
        if not url or (kind == CHAT and field == "attachment"):
            continue
        found = media_type(url)
        if found is not None and found not in accepted:
            yield Problem(
                name,
                kind,
                "media-type",
                f"{field} {url!r} is {found}, which {kind} refuses",
            )


def _non_gsm7(text: str) -> List[str]:
    return sorted({ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENDED})


def check_variation(
    name: str, kind: str, variation: Variation, max_sms_segments: int
) -> Iterator[Problem]:
    message = _message(variation)
    if kind in (VOICE, SMS):
        for button in message.buttons:
            if _URL.match(button.payload.strip()):
                yield Problem(
                    name,
                    kind,
                    "url-button",
                    f"button {button.title!r} has a web address as payload; on {kind} the "
                    "customer's choice would send it to the assistant as a message",
                )
    if kind == VOICE:
        speech = render_voice_message(message)
        if not speech and not (message.custom or {}).get("call_control"):
            yield Problem(name, kind, "says-nothing", "renders to no speech")
        if _URL.search(speech):
            yield Problem(name, kind, "speech-url", f"a web address is spoken: {speech!r}")
        if _MARKUP.search(speech):
            yield Problem(name, kind, "speech-markdown", f"markup is spoken: {speech!r}")
    elif kind == SMS:
        rendering = render_sms([message])
        if not rendering.messages and not message.custom:
            yield Problem(name, kind, "says-nothing", "renders to no SMS")
        for sms in rendering.messages:
            segments = sms.segments
            if segments.encoding == "UCS-2":
                characters = " ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in _non_gsm7(sms.body))
                yield Problem(
                    name,
                    kind,
                    "sms-ucs2",
                    f"{characters} turn the SMS into UCS-2: {segments.segments} segment(s) "
                    f"instead of {_gsm7_segments(sms.body)}",
                )
            if segments.segments > max_sms_segments:
                yield Problem(
                    name,
                    kind,
                    "sms-segments",
                    f"{segments.segments} segments ({segments.units} {segments.encoding} "
                    f"characters), more than {max_sms_segments}",
                )
    elif kind == WHATSAPP:
        shown = render_whatsapp([message])
        if not shown.messages:
            yield Problem(name, kind, "says-nothing", "renders to no WhatsApp message")
        choices = [b for b in message.buttons if not _URL.match(b.payload.strip())]
        tappable = any(session_content(m) for m in shown.messages)
        if choices and not tappable:
            yield Problem(
                name,
                kind,
                "whatsapp-buttons",
                f"{len(choices)} option(s) arrive as numbered text: WhatsApp taps 3 with titles "
                "of at most 20 characters, or a list of 10 of at most 24",
            )
    else:
        rendered = render_chat(message)
        if not (
            rendered.get("text")
            or rendered.get("buttons")
            or rendered.get("image")
            or rendered.get("attachment")
            or rendered.get("custom")
        ):
            yield Problem(name, kind, "says-nothing", "renders to an empty chat message")
    yield from _media_problems(name, kind, message)


def _gsm7_segments(body: str) -> int:
    """Segments ``body`` would take with its non-GSM-7 characters removed."""
    outside = set(_non_gsm7(body))
    return sms_segments("".join(ch for ch in body if ch not in outside)).segments


def check_response(
    name: str, variations: Sequence[Variation], max_sms_segments: int
) -> Iterator[Problem]:
    for variation in variations:
        channel = variation.get("channel")
        if channel is not None and channel not in KIND_OF_OUTPUT:
            hint = (
                f" (did you mean {OUTPUT_OF_KIND[channel]}?)" if channel in OUTPUT_OF_KIND else ""
            )
            yield Problem(
                name,
                None,
                "unknown-channel",
                f"channel {channel!r} is no output channel's name{hint}; known: "
                + ", ".join(sorted(KIND_OF_OUTPUT)),
            )
        if channel == OUTPUT_OF_KIND[WHATSAPP] and _SINGLE_STAR.search(str(variation.get("text"))):
            yield Problem(
                name,
                WHATSAPP,
                "whatsapp-emphasis",
                "*word* is markdown italics (shown _word_ on WhatsApp); write **word** for bold",
            )
        declaration = declaration_of(name, variation)
        if declaration is not None:
            for code, detail in template_problems(declaration):
                yield Problem(name, None, code, f"whatsapp_template {declaration.name!r}: {detail}")
    for kind in KINDS:
        used = candidates(variations, kind)
        if not any(not v.get("condition") for v in used):
            yield Problem(
                name,
                kind,
                "no-default",
                "no variation without a condition for this channel: "
                + ("when no condition holds, " if used else "")
                + "the customer gets no reply",
            )
        for variation in variations:
            if (
                variation.get("condition")
                and variation.get("channel") is None
                and variation not in used
            ):
                yield Problem(
                    name,
                    kind,
                    "shadowed-condition",
                    f"the condition variation {variation.get('text', '')[:40]!r} is never used "
                    f"here: Rasa prefers the {OUTPUT_OF_KIND[kind]} variation without one",
                )
        for variation in used:
            yield from check_variation(name, kind, variation, max_sms_segments)


def check(
    responses: Mapping[str, Sequence[Variation]], max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS
) -> List[Problem]:
    """Every problem of every response, response by response, then templates declared twice."""
    found = [
        problem
        for name, variations in responses.items()
        for problem in check_response(name, variations, max_sms_segments)
    ]
    return found + list(_duplicate_templates(responses))


def _duplicate_templates(responses: Mapping[str, Sequence[Variation]]) -> Iterator[Problem]:
    bodies: Dict[str, str] = {}
    for name, variations in responses.items():
        for variation in variations:
            declaration = declaration_of(name, variation)
            if declaration is None or not declaration.name:
                continue
            seen = bodies.setdefault(declaration.name, declaration.body)
            if seen != declaration.body:
                yield Problem(
                    name,
                    None,
                    "template-duplicate",
                    f"whatsapp_template {declaration.name!r} is declared with other text by "
                    "another response: one name, one approved text",
                )


def preview(name: str, variations: Sequence[Variation]) -> str:
    """The voice, SMS and chat forms of a response, variation by variation."""
    lines = [name]
    for kind in KINDS:
        lines.append(f"\n== {kind} ({OUTPUT_OF_KIND[kind]}) ==")
        used = candidates(variations, kind)
        if not used:
            lines.append("  (no variation: the customer gets no reply)")
        for variation in used:
            condition = variation.get("condition")
            lines.append(f"- when {condition}:" if condition else "-")
            message = _message(variation)
            if kind == VOICE:
                lines.append(f"  says: {render_voice_message(message)}")
            elif kind == SMS:
                for sms in render_sms([message]).messages:
                    count = sms.segments
                    lines.append(
                        f"  texts ({count.segments} segment(s), {count.encoding}, "
                        f"{count.units} characters):"
                    )
                    lines.extend(f"    {line}" for line in sms.body.splitlines() or [""])
                    lines.extend(f"    [media] {url}" for url in sms.media_urls)
            elif kind == WHATSAPP:
                lines.extend(_whatsapp_preview(message))
                declaration = declaration_of(name, variation)
                if declaration is not None:
                    lines.append(
                        f"  outside the 24-hour window: template {declaration.name} "
                        f"({declaration.category}): {declaration.body}"
                    )
            else:
                rendered = render_chat(message)
                lines.append(f"  shows: {rendered['html']}")
                for button in rendered.get("buttons") or ():
                    target = button.get("url") or button.get("payload")
                    lines.append(f"    [button] {button['title']} -> {target}")
    return "\n".join(lines)


def _whatsapp_preview(message: BotMessage) -> List[str]:
    lines = []
    for bubble in render_whatsapp([message]).messages:
        lines.append(f"  sends ({len(bubble.body)} characters):")
        lines.extend(f"    {line}" for line in bubble.body.splitlines() or [""])
        lines.extend(f"    [media] {url}" for url in bubble.media_urls)
        content = session_content(bubble)
        if content is None:
            continue
        types = content["types"]
        if QUICK_REPLY in types:
            titles = [action["title"] for action in types[QUICK_REPLY]["actions"]]
            lines.append("    [quick replies] " + " | ".join(titles))
        elif LIST_PICKER in types:
            titles = [item["item"] for item in types[LIST_PICKER]["items"]]
            lines.append("    [list] " + " | ".join(titles))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.responses", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--domain", type=Path, default=ROOT / "domain.yml")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="check every response for every channel")
    checking.add_argument("--max-sms-segments", type=int, default=DEFAULT_MAX_SMS_SEGMENTS)
    previewing = commands.add_parser(
        "preview", help="print one response as each channel renders it"
    )
    previewing.add_argument("response")
    arguments = parser.parse_args(argv)
    responses = load_responses(arguments.domain)
    if arguments.command == "preview":
        if arguments.response not in responses:
            print(f"no response {arguments.response!r} in {arguments.domain}", file=sys.stderr)
            return 2
        print(preview(arguments.response, responses[arguments.response]))
        return 0
    problems = check(responses, arguments.max_sms_segments)
    for problem in problems:
        print(problem)
    print(
        f"{len(responses)} responses checked for {', '.join(KINDS)}: "
        + (f"{len(problems)} problem(s)" if problems else "no problems"),
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
