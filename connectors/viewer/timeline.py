"""A conversation's stored events as the viewer's timeline entries. Pure: no Sanic, no Rasa, no
Redis, so every rule here is tested on event dicts built directly.

Each entry is a JSON object with ``index`` (the event's position in the conversation's log, the
paging cursor), ``timestamp`` and ``type``:

- ``user``: ``text``, ``channel`` (voice/sms/whatsapp/chat or None), ``intent``,
  ``confidence``, ``entities``, ``barge_in`` (what the caller heard of the message they cut off)
  when the VAPI connector marked the turn, ``media`` (kind, type, name, size, ``refused``; the
  page fetches one through ``GET /api/media``) and ``location`` when the message carried them;
- ``bot``: ``channel`` (the turn's) and ``rendered``, what that channel's customer got: voice
  ``speech``, SMS ``body`` with ``segments`` and ``encoding``, WhatsApp ``bubbles`` (each
  ``body``, ``media``, tappable ``options``), chat ``html``, ``text`` and ``buttons``; a message
  already delivered on another channel says so in ``delivered_on``; ``delivery``, the progress
  Twilio reported for what answered that turn (``status``: the least advanced of its messages,
  ``queued`` … ``delivered``, ``read``, or ``failed``/``undelivered`` with its ``error_code``);
  a reply a person from the team wrote during a hand-off has ``agent`` (their name) and
  ``message_id`` (the inbox tracks its delivery by it);
- ``bot_state``: the bot stood aside for a person (``paused`` true) or came back (false), with
  ``why`` (asked for, handed back, resolved, withdrawn, given up…) and ``by`` (a name);
- ``action``: ``name``, ``policy``, ``confidence`` (``action_listen`` and
  ``user_featurization`` events are left out: they follow every turn and say nothing);
- ``slot``: ``name``, ``value`` (as text, bounded) and ``barge_in`` for the slots barge-in sets;
- ``call_summary``: the VAPI end-of-call report stored in the ``last_call`` slot;
- ``session``: a new conversation session began; ``form``: a form became active or ended;
  ``event``: anything else, by Rasa's event name.

Phone numbers in every text shown are masked (:func:`omnichannel.masking.mask`), except the
number the operator searched by, which they already know (:class:`Masker`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from connectors.event_log.reading import CALL_REPORT_SLOT, next_turn_channel
from omnichannel.channels import CHAT, SMS, VOICE, WHATSAPP, kind_of_event
from omnichannel.masking import mask
from omnichannel.receipts import PROGRESS, Receipt
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.sms import render_sms
from omnichannel.rendering.voice import render_voice_message
from omnichannel.rendering.whatsapp import render_whatsapp, session_content

Event = Dict[str, Any]
Entry = Dict[str, Any]

#: Slots the barge-in handling sets (docs/DESIGNERS.md, "Barge-in"); their changes are
#: flagged as such.
BARGE_IN_SLOTS = frozenset({"interrupted", "unheard", "offer"})
#: Longest slot value or text field shown; the rest is cut, marked with an ellipsis.
MAX_VALUE_CHARS = 2000
#: Stock actions and events the timeline leaves out: they follow every turn and say nothing.
SILENT_ACTIONS = frozenset({"action_listen"})
SILENT_EVENTS = frozenset({"user_featurization"})
_PLACEHOLDER = "\x00searched\x00"


@dataclass(frozen=True)
class Masker:
    """Masks phone numbers in what the viewer shows, leaving the searched one (E.164) readable."""

    searched_phone: Optional[str] = None

    def __call__(self, text: str) -> str:
        if not self.searched_phone:
            return mask(text)
        searched = re.compile(rf"(?<![\w+]){re.escape(self.searched_phone)}(?!\w)")
        return mask(searched.sub(_PLACEHOLDER, text)).replace(_PLACEHOLDER, self.searched_phone)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _shown_value(value: Any, masker: Masker) -> Optional[str]:
    """A slot value as text: strings as they are, anything else as compact JSON."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _bounded(masker(text))


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def render_for(channel: Optional[str], message: BotMessage, masker: Masker) -> Dict[str, Any]:
    """A bot message as ``channel``'s customer got it; unknown channel: its text only."""
    if channel == VOICE:
        return {"speech": masker(render_voice_message(message))}
    if channel == SMS:
        texted = [sms for sms in render_sms([message]).messages if sms.body]
        return {
            "body": masker("\n\n".join(sms.body for sms in texted)),
            "segments": sum(sms.segments.segments for sms in texted),
            "encoding": "UCS-2"
            if any(sms.segments.encoding == "UCS-2" for sms in texted)
            else "GSM-7",
        }
    if channel == WHATSAPP:
        bubbles = []
        for bubble in render_whatsapp([message]).messages:
            bubble_shown: Dict[str, Any] = {"body": masker(bubble.body)}
            if bubble.media_urls:
                bubble_shown["media"] = list(bubble.media_urls)
            content = session_content(bubble)
            if content is not None:
                [definition] = content["types"].values()
                items = definition.get("actions") or definition.get("items") or []
                bubble_shown["options"] = [
                    masker(str(i.get("title") or i.get("item"))) for i in items
                ]
            bubbles.append(bubble_shown)
        return {"bubbles": bubbles}
    if channel == CHAT:
        chat = render_chat(message)
        shown: Dict[str, Any] = {"text": masker(chat["text"]), "html": masker(chat["html"])}
        if chat.get("buttons"):
            shown["buttons"] = [
                {key: masker(str(value)) for key, value in button.items()}
                for button in chat["buttons"]
            ]
        return shown
    return {"text": masker(message.text)}


def _user_entry(event: Event, base: Entry, masker: Masker) -> Entry:
    parse = _dict(event.get("parse_data"))
    intent = _dict(parse.get("intent"))
    metadata = _dict(event.get("metadata"))
    entry = {
        **base,
        "type": "user",
        "text": masker(_bounded(str(event.get("text") or ""))),
        "channel": kind_of_event(event),
        "intent": intent.get("name") if isinstance(intent.get("name"), str) else None,
        "confidence": _number(intent.get("confidence")),
        "entities": [
            {"entity": str(item.get("entity")), "value": _shown_value(item.get("value"), masker)}
            for item in parse.get("entities") or []
            if isinstance(item, Mapping) and item.get("entity")
        ],
    }
    media = [
        {
            key: item[key]
            for key in ("kind", "content_type", "name", "size", "source", "refused")
            if item.get(key) is not None
        }
        for item in metadata.get("media") or []
        if isinstance(item, Mapping)
    ]
    if media:
        entry["media"] = media
    location = _dict(metadata.get("location"))
    if location:
        entry["location"] = {
            key: masker(str(location[key])) if isinstance(location[key], str) else location[key]
            for key in ("latitude", "longitude", "address", "label")
            if key in location
        }
    barge_in = _dict(metadata.get("barge_in"))
    if barge_in:
        entry["barge_in"] = {
            "heard_text": masker(_bounded(str(barge_in.get("heard_text") or ""))),
            "heard_ratio": _number(barge_in.get("heard_ratio")),
        }
    return entry


#: The rank of each status in a message's progress; a failure outranks everything.
_RANK = {status: rank for rank, status in enumerate(PROGRESS)}


def delivery_of(receipts: Sequence[Receipt]) -> Optional[Dict[str, Any]]:
    """The progress of a set of messages as one: a failure if any failed (with its error), else
    the least advanced status (a reply reads as "read" only once all its parts were)."""
    if not receipts:
        return None
    failed = [r for r in receipts if r.failed]
    if failed:
        return {"status": failed[0].status, "error_code": failed[0].error_code}
    least = min(receipts, key=lambda r: _RANK.get(r.status, 0))
    return {"status": least.status}


def _bot_entry(
    event: Event,
    base: Entry,
    turn_channel: Optional[str],
    masker: Masker,
    delivery: Optional[Dict[str, Any]] = None,
) -> Entry:
    data = _dict(event.get("data"))
    metadata = _dict(event.get("metadata"))
    message = BotMessage.from_rasa(
        {**data, "text": event.get("text"), "agent": metadata.get("agent")}
    )
    channel = kind_of_event(event) or turn_channel
    entry = {
        **base,
        "type": "bot",
        "channel": channel,
        "rendered": render_for(channel, message, masker),
    }
    if delivery is not None:
        entry["delivery"] = delivery
    if message.delivered_on:
        entry["delivered_on"] = message.delivered_on
    kind = metadata.get("kind")
    if isinstance(kind, str):
        entry["kind"] = kind
    if message.author:
        entry["agent"] = _bounded(message.author)
    if isinstance(metadata.get("handoff_message_id"), str):
        entry["message_id"] = metadata["handoff_message_id"]
    return entry


def _bot_state_entry(event: Event, base: Entry) -> Entry:
    """A pause (a person took over) or a resume (the bot is back), with why and by whom."""
    handoff = _dict(_dict(event.get("metadata")).get("handoff"))
    by = _dict(handoff.get("by"))
    why = handoff.get("event")
    return {
        **base,
        "type": "bot_state",
        "paused": event.get("event") == "pause",
        "why": why if isinstance(why, str) else None,
        "by": _bounded(str(by["name"])) if by.get("name") else None,
    }


def _call_summary_entry(report: Mapping[str, Any], base: Entry, masker: Masker) -> Entry:
    def text(name: str) -> Optional[str]:
        value = report.get(name)
        return masker(_bounded(value)) if isinstance(value, str) and value else None

    return {
        **base,
        "type": "call_summary",
        "channel": VOICE,
        "call_id": text("call_id"),
        "summary": text("summary"),
        "ended_reason": text("ended_reason"),
        "duration_seconds": _number(report.get("duration_seconds")),
        "transcript": text("transcript"),
        "recording_url": text("recording_url"),
    }


def entry_of(
    index: int,
    event: Event,
    turn_channel: Optional[str],
    masker: Masker,
    delivery: Optional[Dict[str, Any]] = None,
) -> Optional[Entry]:
    """One event as a timeline entry, or None for events the timeline leaves out; a bot
    event's ``delivery`` is its turn's (:func:`build_timeline`)."""
    kind = event.get("event")
    base: Entry = {"index": index, "timestamp": _number(event.get("timestamp"))}
    if kind == "user":
        return _user_entry(event, base, masker)
    if kind == "bot":
        return _bot_entry(event, base, turn_channel, masker, delivery)
    if kind == "action":
        name = event.get("name")
        if not isinstance(name, str) or name in SILENT_ACTIONS:
            return None
        return {
            **base,
            "type": "action",
            "name": name,
            "policy": event.get("policy") if isinstance(event.get("policy"), str) else None,
            "confidence": _number(event.get("confidence")),
        }
    if kind == "slot":
        name = str(event.get("name"))
        if name == CALL_REPORT_SLOT and isinstance(event.get("value"), Mapping):
            return _call_summary_entry(event["value"], base, masker)
        return {
            **base,
            "type": "slot",
            "name": name,
            "value": _shown_value(event.get("value"), masker),
            "barge_in": name in BARGE_IN_SLOTS,
        }
    if kind == "session_started":
        return {**base, "type": "session"}
    if kind in ("pause", "resume"):
        return _bot_state_entry(event, base)
    if kind in SILENT_EVENTS:
        return None
    if kind == "active_loop":
        name = event.get("name")
        return {**base, "type": "form", "name": name if isinstance(name, str) else None}
    return {**base, "type": "event", "event": str(kind)}


def build_timeline(
    events: Sequence[Tuple[int, Event]],
    turn_channel: Optional[str],
    masker: Masker,
    receipts: Mapping[str, Receipt] = {},  # noqa: B006 - read only
) -> List[Entry]:
    """Entries for ``(index, event)`` pairs in log order. ``turn_channel`` is the channel of the
    last user turn before them: the channel the first bot messages answered on. ``receipts``
    (message SID -> receipt, omnichannel/receipts.py) give each SMS or WhatsApp turn's bot
    entries their ``delivery``: the receipts that answered the turn's inbound message, or those
    a bot event names itself (``metadata.message_sids``, "text me that")."""
    by_turn: Dict[str, List[Receipt]] = {}
    for receipt in receipts.values():
        if receipt.reply_to:
            by_turn.setdefault(receipt.reply_to, []).append(receipt)
    entries = []
    turn_delivery: Optional[Dict[str, Any]] = None
    for index, event in events:
        turn_channel = next_turn_channel(event, turn_channel)
        if event.get("event") == "user":
            answered = by_turn.get(str(_dict(event.get("metadata")).get("message_sid") or ""))
            turn_delivery = delivery_of(answered or [])
        delivery = turn_delivery
        named = _dict(event.get("metadata")).get("message_sids")
        if event.get("event") == "bot" and isinstance(named, list):
            delivery = delivery_of([receipts[sid] for sid in named if sid in receipts])
        entry = entry_of(index, event, turn_channel, masker, delivery)
        if entry is not None:
            entries.append(entry)
    return entries
