"""What the caller said and heard, read from the conversation history VAPI sends (pure).

VAPI resends the whole call each turn, and the assistant messages in it are the transcript of
what was actually spoken. From that history alone this module tells which utterance a request
asks us to answer (:func:`spoken_turn`), whether a new request continues the utterance of the
turn in flight (:func:`supersedes`: the caller kept talking), and how much of our last answer
the caller heard before cutting it off (:func:`barge_in`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from connectors.vapi.wire import FLUSH, ChatMessage

_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class SpokenTurn:
    """The caller's utterance this request asks us to answer, located in VAPI's history."""

    #: Index (among user messages) of the last user message: with the call id and the text,
    #: the key that tells duplicates and superseding requests apart.
    ordinal: int
    #: Index of the first user message making up the utterance.
    first_ordinal: int
    text: str


def dialogue(messages: Sequence[ChatMessage]) -> List[Tuple[str, str]]:
    """(role, text) of the user and assistant messages, in order (system prompts left out)."""
    return [(m.role, m.text) for m in messages if m.role in ("user", "assistant")]


def _normalised_words(text: str) -> List[str]:
    return _WORD.findall(text.lower().replace(FLUSH, " "))


def extends(longer: str, shorter: str) -> bool:
    """True when ``longer`` is ``shorter`` continued (the caller kept talking)."""
    new, old = _normalised_words(longer), _normalised_words(shorter)
    return len(new) > len(old) and new[: len(old)] == old


def heard_ratio(sent: str, heard: str) -> float:
    """Share of the words we sent that the caller heard (VAPI's transcript of the speech)."""
    sent_words, heard_words = _normalised_words(sent), _normalised_words(heard)
    if not sent_words:
        return 1.0
    matcher = difflib.SequenceMatcher(None, sent_words, heard_words, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return round(min(1.0, matched / len(sent_words)), 3)


def spoken_turn(
    messages: Sequence[ChatMessage], last_answered: Optional[Mapping[str, Any]] = None
) -> Optional[SpokenTurn]:
    """The utterance to answer: the trailing user messages not yet answered, or None.

    VAPI may split one long utterance over consecutive user messages (a request cancelled
    mid-utterance, then the rest); those after the last assistant message and after the last
    answered turn (``last_answered``: its ``ordinal`` and ``first_ordinal``) are joined. A
    request repeating the last answered turn gets that turn's utterance back, so it is
    recognised as a duplicate.
    """
    said = dialogue(messages)
    if not said or said[-1][0] != "user":
        return None
    user_count = sum(1 for role, _ in said if role == "user")
    ordinal = user_count - 1
    answered_ordinal = -1
    if last_answered:
        answered_ordinal = int(last_answered["ordinal"])
        if answered_ordinal >= ordinal:
            answered_ordinal = min(ordinal, int(last_answered.get("first_ordinal", ordinal))) - 1
    texts: List[str] = []
    first = ordinal
    current = ordinal
    for role, text in reversed(said):
        if role != "user" or current <= answered_ordinal:
            break
        texts.insert(0, text)
        first = current
        current -= 1
    text = " ".join(t for t in texts if t).strip()
    return SpokenTurn(ordinal=ordinal, first_ordinal=first, text=text) if text else None


def heard_since(messages: Sequence[ChatMessage], after_ordinal: int, before_ordinal: int) -> str:
    """Assistant speech between user message ``after_ordinal`` and ``before_ordinal``."""
    heard: List[str] = []
    ordinal = -1
    for role, text in dialogue(messages):
        if role == "user":
            ordinal += 1
            if ordinal >= before_ordinal:
                break
        elif after_ordinal <= ordinal and text:
            heard.append(text)
    return " ".join(heard)


def supersedes(
    in_flight: Optional[Mapping[str, Any]], request_id: str, last_text: str, spoken: SpokenTurn
) -> bool:
    """Whether a new request takes over the call's turn in flight: the one place that decides
    a turn is superseded.

    ``in_flight`` is the call's record of the turn being answered (``request``, ``ordinal``,
    ``text``); ``last_text`` the new request's last user message. It does when the caller kept
    talking: the same user message, longer (VAPI re-POSTs the growing utterance), or a later one
    that the new request's utterance takes in (the earlier answer was cut off before it began).
    """
    if not in_flight or in_flight.get("request") == request_id:
        return False
    same_utterance = in_flight.get("ordinal") == spoken.ordinal and extends(
        last_text, str(in_flight.get("text") or "")
    )
    within = spoken.first_ordinal <= int(in_flight.get("ordinal", -1)) < spoken.ordinal
    return same_utterance or within


def barge_in(
    last_sent: Optional[Mapping[str, Any]],
    interrupted_at: float,
    messages: Sequence[ChatMessage],
    spoken: SpokenTurn,
    threshold: float,
) -> Optional[Dict[str, Any]]:
    """``{sent_text, heard_text, heard_ratio}`` when the caller cut our last answer off.

    ``last_sent`` is what the call's last turn said (``text``, its ``ordinal``, ``at`` when it
    started); ``interrupted_at`` when VAPI last reported ``user-interrupted`` (0: never). The
    caller cut it off when they heard less than ``threshold`` of it, or VAPI reported an
    interruption since and they did not hear all of it.
    """
    if not last_sent:
        return None
    sent = str(last_sent.get("text") or "")
    if not sent or int(last_sent["ordinal"]) >= spoken.first_ordinal:
        return None
    heard = heard_since(messages, int(last_sent["ordinal"]), spoken.first_ordinal)
    ratio = heard_ratio(sent, heard)
    interrupted = interrupted_at >= float(last_sent.get("at") or 0) > 0
    if ratio < threshold or (interrupted and ratio < 1.0):
        return {"sent_text": sent, "heard_text": heard, "heard_ratio": ratio}
    return None
