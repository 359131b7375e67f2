"""What the caller said and heard, from the history VAPI sends (pure functions)."""

from __future__ import annotations

from typing import List

import pytest

from connectors.vapi.hearing import SpokenTurn, extends, heard_ratio, heard_since, spoken_turn
from connectors.vapi.wire import ChatMessage


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
