"""What the caller said and heard, from the history VAPI sends (pure functions)."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from connectors.vapi.hearing import (
    SpokenTurn,
    barge_in,
    extends,
    heard_ratio,
    heard_since,
    spoken_turn,
    supersedes,
)
from connectors.vapi.wire import ChatMessage

pytestmark = pytest.mark.unit


def _history(*pairs: str) -> List[ChatMessage]:
    roles = {"U": "user", "A": "assistant", "S": "system"}
    return [ChatMessage(role=roles[p[0]], content=p[2:]) for p in pairs]


def test_the_utterance_is_the_unanswered_user_messages():
    history = _history("S:be nice", "A:Hi!", "U:where is", "U:my order")
    assert spoken_turn(history) == SpokenTurn(ordinal=1, first_ordinal=0, text="where is my order")
    # "where is" was answered already (an empty answer, e.g. a backchannel): only the rest.
    answered = {"ordinal": 0, "first_ordinal": 0}
    assert spoken_turn(history, answered) == SpokenTurn(1, 1, "my order")
    # The same request again after it was answered: the same utterance, so the same key.
    done = {"ordinal": 1, "first_ordinal": 0}
    assert spoken_turn(history, done) == SpokenTurn(1, 0, "where is my order")
    assert spoken_turn(_history("U:hello", "A:Hi there.")) is None
    assert spoken_turn(_history("S:only a prompt")) is None


def test_extends_and_heard_ratio():
    assert extends("I need my tracking number", "I need my")
    assert extends("I need, my tracking number.", "i need my")
    assert not extends("I need my", "I need my")
    assert not extends("you need my tracking number", "I need my")
    sent = "Here's our refund policy. You can return most items within 30 days of delivery."
    assert heard_ratio(sent, sent) == 1.0
    assert heard_ratio(sent, "Here's our refund policy.") == pytest.approx(4 / 14, abs=0.01)
    assert heard_ratio(sent, "") == 0.0
    history = _history("U:refunds?", f"A:{sent[:25]}", "U:wait")
    assert heard_since(history, after_ordinal=0, before_ordinal=1) == sent[:25]


def _in_flight(ordinal: int, text: str, request: str = "old") -> Dict[str, Any]:
    return {"request": request, "ordinal": ordinal, "text": text}


def test_a_longer_utterance_supersedes_the_turn_in_flight():
    spoken = SpokenTurn(ordinal=1, first_ordinal=1, text="I need my tracking number")
    last = "I need my tracking number"
    assert supersedes(_in_flight(1, "I need my"), "new", last, spoken)
    # The same request, another message, or a different utterance does not.
    assert not supersedes(_in_flight(1, "I need my", request="new"), "new", last, spoken)
    assert not supersedes(None, "new", last, spoken)
    assert not supersedes(_in_flight(1, "you need my"), "new", last, spoken)
    assert not supersedes(_in_flight(1, last), "new", last, spoken)
    # The turn in flight answers a user message the new utterance takes in: superseded.
    joined = SpokenTurn(ordinal=2, first_ordinal=1, text="where is my order please")
    assert supersedes(_in_flight(1, "where is"), "new", "my order please", joined)
    # ... but not one answered before the new utterance began.
    later = SpokenTurn(ordinal=2, first_ordinal=2, text="my order please")
    assert not supersedes(_in_flight(1, "where is"), "new", "my order please", later)


def test_barge_in_from_what_was_sent_and_heard():
    sent = "Here's our refund policy. You can return most items within 30 days of delivery."
    last_sent = {"ordinal": 0, "first_ordinal": 0, "text": sent, "at": 100.0}
    spoken = SpokenTurn(ordinal=1, first_ordinal=1, text="wait")
    cut = _history("U:refunds?", "A:Here's our refund policy.", "U:wait")
    assert barge_in(last_sent, 0.0, cut, spoken, threshold=0.9) == {
        "sent_text": sent,
        "heard_text": "Here's our refund policy.",
        "heard_ratio": heard_ratio(sent, "Here's our refund policy."),
    }
    # Heard in full: no barge-in, even with an interruption reported.
    full = _history("U:refunds?", f"A:{sent}", "U:wait")
    assert barge_in(last_sent, 200.0, full, spoken, threshold=0.9) is None
    # Most of it heard: a barge-in only when VAPI reported an interruption since it began.
    most = _history("U:refunds?", f"A:{sent.rsplit(' ', 1)[0]}", "U:wait")
    assert barge_in(last_sent, 0.0, most, spoken, threshold=0.9) is None
    assert barge_in(last_sent, 50.0, most, spoken, threshold=0.9) is None
    assert barge_in(last_sent, 200.0, most, spoken, threshold=0.9)["heard_ratio"] >= 0.9
    # Nothing sent, or the utterance answers that very turn again: no barge-in.
    assert barge_in(None, 0.0, cut, spoken, threshold=0.9) is None
    assert barge_in({**last_sent, "text": ""}, 0.0, cut, spoken, threshold=0.9) is None
    again = SpokenTurn(ordinal=0, first_ordinal=0, text="refunds?")
    assert barge_in(last_sent, 0.0, cut, again, threshold=0.9) is None
