"""The response check and preview: every response of the domain rendered as each channel renders
it, and the silent failures a designer cannot see in ``rasa test`` caught by name.

``rasa data validate`` and ``rasa test`` never produce the bot's text, so they pass responses
that reach some customers as nothing or as something broken. For each response and each channel
(voice, SMS, chat), this picks the variations Rasa could choose there (as Rasa's
``ResponseVariationFilter`` ranks them: a ``channel:`` variation above a ``condition:`` one),
renders them with the connectors' own renderers, and reports:

- ``no-default``: no variation without a condition for the channel: when no condition holds (or,
  with only other channels' variations, always) the customer gets no reply at all;
- ``unknown-channel``: a ``channel:`` no connector has (the names are the connectors':
  ``vapi``, ``twilio_sms``, ``webchat``), so the variation is never used;
- ``shadowed-condition``: a ``condition:`` variation without ``channel:`` that a channel never
  uses, because Rasa prefers that channel's unconditional variation;
- ``url-button``: a button whose payload is a web address on voice or SMS ("Reply 1 for …" would
  send the address to Rasa as the customer's message);
- ``sms-segments``: an SMS longer than ``max_sms_segments`` segments;
- ``sms-ucs2``: a character that pushes an SMS from GSM-7 into UCS-2 (70 instead of 160
  characters a segment), named;
- ``speech-url`` / ``speech-markdown``: a web address or markdown left in what a caller hears;
- ``says-nothing``: a variation that renders to nothing on a channel it is used on.

``python -m devtools.responses check`` (``make responses``, part of ``make test``) exits 1 with
one line per problem; ``python -m devtools.responses preview utter_x`` (``make preview
RESPONSE=utter_x``) prints the voice, SMS (segments, encoding) and chat forms.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import yaml

from omnichannel.channels import CONNECTOR_OF_KIND, KIND_OF_CONNECTOR, KINDS, SMS, VOICE
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import GSM7_BASIC, GSM7_EXTENDED, render_sms, sms_segments
from omnichannel.rendering.voice import render_voice_message

ROOT = Path(__file__).resolve().parent.parent
#: Default bound on one response's SMS, in segments (each 153 GSM-7 characters when joined).
DEFAULT_MAX_SMS_SEGMENTS = 4

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
    connector = CONNECTOR_OF_KIND[kind]
    own = [v for v in variations if v.get("channel") == connector]
    shared = [v for v in variations if v.get("channel") is None]
    if any(not v.get("condition") for v in own):
        return own
    return own + shared


def _message(variation: Variation) -> BotMessage:
    return BotMessage.from_rasa(
        {k: v for k, v in variation.items() if k not in ("channel", "condition")}
    )


def render_for(kind: str, variation: Variation) -> str:
    """A variation as the customer on ``kind`` receives it: the speech, the SMS bodies (blank
    line between messages), the chat message's markdown."""
    message = _message(variation)
    if kind == VOICE:
        return render_voice_message(message)
    if kind == SMS:
        return "\n\n".join(sms.body for sms in render_sms([message]).messages)
    return str(render_chat(message).get("text") or "")


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


def _gsm7_segments(body: str) -> int:
    """Segments ``body`` would take with its non-GSM-7 characters removed."""
    outside = set(_non_gsm7(body))
    return sms_segments("".join(ch for ch in body if ch not in outside)).segments


def check_response(
    name: str, variations: Sequence[Variation], max_sms_segments: int
) -> Iterator[Problem]:
    for variation in variations:
        channel = variation.get("channel")
        if channel is not None and channel not in KIND_OF_CONNECTOR:
            hint = (
                f" (did you mean {CONNECTOR_OF_KIND[channel]}?)"
                if channel in CONNECTOR_OF_KIND
                else ""
            )
            yield Problem(
                name,
                None,
                "unknown-channel",
                f"channel {channel!r} is no connector's name{hint}; known: "
                + ", ".join(sorted(KIND_OF_CONNECTOR)),
            )
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
                    f"here: Rasa prefers the {CONNECTOR_OF_KIND[kind]} variation without one",
                )
        for variation in used:
            yield from check_variation(name, kind, variation, max_sms_segments)


def check(
    responses: Mapping[str, Sequence[Variation]], max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS
) -> List[Problem]:
    """Every problem of every response, response by response."""
    return [
        problem
        for name, variations in responses.items()
        for problem in check_response(name, variations, max_sms_segments)
    ]


def preview(name: str, variations: Sequence[Variation]) -> str:
    """The voice, SMS and chat forms of a response, variation by variation."""
    lines = [name]
    for kind in KINDS:
        lines.append(f"\n== {kind} ({CONNECTOR_OF_KIND[kind]}) ==")
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
            else:
                rendered = render_chat(message)
                lines.append(f"  shows: {rendered['html']}")
                for button in rendered.get("buttons") or ():
                    target = button.get("url") or button.get("payload")
                    lines.append(f"    [button] {button['title']} -> {target}")
    return "\n".join(lines)


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
