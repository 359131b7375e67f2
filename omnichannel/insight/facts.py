"""The figures one batch of stored events contributes, worked out from the events alone.

The tracker store hands over exactly the events each save appended to a conversation's log
(appends are checked against the log's length, so a turn retried on another replica is counted
once). From them:

- a **turn** per customer message (``user`` event, not a carried one), on its channel kind;
- a **fallback** when the message was not understood (the ``nlu_fallback`` intent) or the LLM
  fallback answered it; the message's text (redacted, normalised) joins the day's
  **not-understood** list, with the intent NLU ranked next (a suggestion for the designer);
- a **barge-in** when the message cut the bot off (``metadata.barge_in``);
- a **hand-off** when the conversation went to a person (the bot was paused: Rasa's ``pause``,
  or ``action_handoff_to_human`` ran and did not answer that nobody can take it: a call's
  transfer pauses nothing), with the intent of the customer's message before it ("what preceded
  it"); a hand-off asked for but refused (:data:`HANDOFF_REFUSALS`) counts as
  ``handoff_unavailable`` instead;
- an **agent reply** for each message a person sent through the hand-off (a ``bot`` event whose
  metadata names the ``agent``), and how each hand-off **ended** (a ``resume`` whose metadata's
  ``handoff.event`` says why the bot took over again: resolved, handed back, abandoned…);
- a **call outcome** when an end-of-call report was stored (the ``last_call`` slot's
  ``ended_reason``, VAPI's vocabulary, bounded);
- the **reply time** of the turn, when the caller measured one.

Every label is bounded: channel kinds, intents of the trained domain, VAPI's reasons (others
become ``other``). The only free text is the not-understood message, redacted before it is kept.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from omnichannel.channels import kind_of_event
from omnichannel.redaction import redact

OTHER = "other"
NLU_FALLBACK = "nlu_fallback"
LLM_FALLBACK = "action_llm_fallback"
HANDOFF_ACTION = "action_handoff_to_human"
#: The responses with which the hand-off action says no person can take the conversation.
HANDOFF_REFUSALS = frozenset({"utter_handoff_unavailable", "utter_handoff_unreachable"})
#: Metadata keys of the hand-off's events: the agent who wrote a reply, and what a pause or
#: resume was for.
AGENT_KEY = "agent"
HANDOFF_KEY = "handoff"
CALL_REPORT_SLOT = "last_call"
#: Longest not-understood text kept (after normalising).
MAX_TEXT_CHARS = 120
_LABEL = re.compile(r"[a-z0-9_.-]{1,64}")
_SPACES = re.compile(r"\s+")
#: Reply-time buckets (upper bounds, seconds); the last is "slower than the one before".
REPLY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, float("inf"))


def day_of(timestamp: Optional[float]) -> str:
    """The UTC day (``YYYY-MM-DD``) a timestamp falls on (now when None)."""
    moment = (
        datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
        if timestamp
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return moment.strftime("%Y-%m-%d")


def label(value: Any) -> str:
    """A value usable as a figure's label: lower-case identifier characters, else ``other``."""
    text = str(value or "").strip().lower()
    return text if _LABEL.fullmatch(text) else OTHER


def normalised(text: str) -> str:
    """A not-understood message as it is grouped: redacted, lower case, spaces collapsed,
    without the invisible escape of a leading "/", at most :data:`MAX_TEXT_CHARS`."""
    text = redact(text.replace("\u2060", ""))
    text = _SPACES.sub(" ", text).strip().lower().strip(".!?,;: ")
    return text[:MAX_TEXT_CHARS]


def reply_bucket(seconds: float) -> str:
    for bound in REPLY_BUCKETS:
        if seconds <= bound:
            return "inf" if bound == float("inf") else f"{bound:g}"
    return "inf"


@dataclass
class Figures:
    """What one batch adds, per day and channel."""

    #: (day, channel) → counter name → increment.
    counts: Dict[Tuple[str, str], Dict[str, int]] = field(default_factory=dict)
    #: (day, channel) conversations active.
    active: List[Tuple[str, str]] = field(default_factory=list)
    #: (day, channel) conversations handed to a person.
    handed: List[Tuple[str, str]] = field(default_factory=list)
    #: (day, channel, normalised text, suggested intent) not understood.
    not_understood: List[Tuple[str, str, str, str]] = field(default_factory=list)
    #: The intent of the last customer message in the batch (for a later hand-off's "before").
    last_intent: Optional[str] = None

    def add(self, day: str, channel: str, name: str, by: int = 1) -> None:
        bucket = self.counts.setdefault((day, channel), {})
        bucket[name] = bucket.get(name, 0) + by

    @property
    def empty(self) -> bool:
        return not (self.counts or self.active or self.handed or self.not_understood)


def figures_of(
    events: Iterable[Mapping[str, Any]],
    *,
    previous_intent: Optional[str] = None,
    previous_channel: Optional[str] = None,
    reply_seconds: Optional[float] = None,
) -> Figures:
    """The figures of ``events`` (dicts as Rasa serialises them, oldest first).

    ``previous_intent``/``previous_channel``: the conversation's last customer message before
    this batch (a hand-off stored in a save of its own still knows what preceded it);
    ``reply_seconds``: the turn's measured time, counted on the batch's first message's channel.
    """
    figures = Figures(last_intent=previous_intent)
    channel = previous_channel or OTHER
    turn: Optional[Dict[str, Any]] = None
    first_turn_channel: Optional[str] = None
    #: Where the hand-off action ran, until its messages show whether a person takes over.
    asked: Optional[Tuple[str, str]] = None
    day = day_of(None)
    for event in events:
        kind = event.get("event")
        metadata = event.get("metadata") or {}
        if metadata.get("carried_state"):
            continue
        day = day_of(event.get("timestamp"))
        if kind == "bot":
            if asked is not None and metadata.get("utter_action") in HANDOFF_REFUSALS:
                figures.add(*asked, "handoff_unavailable")
                asked = None
            if isinstance(metadata.get(AGENT_KEY), dict):
                figures.add(day, channel, "agent_replies")
            continue
        if asked is not None and kind in ("user", "action"):
            _handoff(figures, *asked)
            asked = None
        if kind == "user":
            channel = label(kind_of_event(event) or OTHER)
            intent = label(((event.get("parse_data") or {}).get("intent") or {}).get("name"))
            figures.add(day, channel, "turns")
            figures.active.append((day, channel))
            if isinstance(metadata.get("barge_in"), dict):
                figures.add(day, channel, "barge_ins")
            text = event.get("text") or ""
            turn = {
                "day": day,
                "channel": channel,
                "text": text,
                "fallback": False,
                "suggested": suggested_intent(event),
            }
            if intent == NLU_FALLBACK:
                _fallback(figures, turn)
            figures.last_intent = intent
            first_turn_channel = first_turn_channel or channel
        elif kind == "action":
            name = event.get("name")
            if name == LLM_FALLBACK and turn is not None:
                _fallback(figures, turn)
            elif name == HANDOFF_ACTION:
                asked = (day, channel)
        elif kind == "pause":
            asked = None
            _handoff(figures, day, channel)
        elif kind == "resume":
            reason = metadata.get(HANDOFF_KEY)
            if isinstance(reason, dict):
                figures.add(day, channel, f"handoff_ended:{label(reason.get('event'))}")
        elif kind == "slot" and event.get("name") == CALL_REPORT_SLOT:
            value = event.get("value")
            report: Mapping[str, Any] = value if isinstance(value, dict) else {}
            figures.add(day, "voice", f"call:{label(report.get('ended_reason'))}")
    if asked is not None:
        _handoff(figures, *asked)
    if reply_seconds is not None and first_turn_channel is not None:
        figures.add(day, first_turn_channel, f"reply:{reply_bucket(reply_seconds)}")
    return figures


def suggested_intent(event: Mapping[str, Any]) -> str:
    """The intent NLU ranked highest after the fallback: where a designer would likely file
    the message as a training example (``other`` when there is none)."""
    ranking = (event.get("parse_data") or {}).get("intent_ranking") or []
    for entry in ranking:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if name and name != NLU_FALLBACK:
            return label(name)
    return OTHER


def _fallback(figures: Figures, turn: Dict[str, Any]) -> None:
    if turn["fallback"]:
        return
    turn["fallback"] = True
    figures.add(turn["day"], turn["channel"], "fallbacks")
    text = normalised(turn["text"])
    if text and not text.startswith("/"):
        figures.not_understood.append((turn["day"], turn["channel"], text, turn["suggested"]))


def _handoff(figures: Figures, day: str, channel: str) -> None:
    if (day, channel) in figures.handed:
        return
    figures.handed.append((day, channel))
    figures.add(day, channel, "handoffs")
    figures.add(day, channel, f"handoff_after:{figures.last_intent or OTHER}")


def parsed(raw_events: Iterable[str]) -> List[Dict[str, Any]]:
    """Events as the tracker store serialised them (JSON text), skipping any that is not."""
    found = []
    for raw in raw_events:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found
