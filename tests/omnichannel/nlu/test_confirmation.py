"""The confirmation gate's decision (omnichannel/nlu/confirmation.py): an acting intent below its
threshold becomes ``nlu_confirm`` with itself first under it; anything else is left alone."""

from __future__ import annotations

import pytest

from omnichannel.nlu.confirmation import (
    CONFIRM_INTENT,
    gated,
    thresholds_from,
    understood_intent,
)

pytestmark = pytest.mark.unit

THRESHOLDS = {"talk_to_human": 0.6, "send_by_sms": 0.7}


def _ranking(*pairs):
    return [{"name": name, "confidence": confidence} for name, confidence in pairs]


def test_an_acting_intent_below_its_threshold_is_confirmed_first() -> None:
    ranking = _ranking(("send_by_sms", 0.55), ("talk_to_human", 0.3))
    intent, new_ranking = gated(ranking[0], ranking, THRESHOLDS)
    assert intent == {"name": CONFIRM_INTENT, "confidence": 0.55}
    assert [entry["name"] for entry in new_ranking] == [
        CONFIRM_INTENT,
        "send_by_sms",
        "talk_to_human",
    ]
    assert understood_intent(intent["name"], new_ranking) == "send_by_sms"


def test_sure_enough_or_not_acting_is_left_alone() -> None:
    assert gated({"name": "send_by_sms", "confidence": 0.7}, [], THRESHOLDS) is None
    assert gated({"name": "greet", "confidence": 0.1}, [], THRESHOLDS) is None
    # The FallbackClassifier's verdict stands: nothing to confirm.
    assert gated({"name": "nlu_fallback", "confidence": 0.4}, [], THRESHOLDS) is None


def test_the_gated_intent_heads_the_ranking_even_when_the_ranking_lacks_it() -> None:
    intent, ranking = gated({"name": "talk_to_human", "confidence": 0.5}, [], THRESHOLDS)
    assert [entry["name"] for entry in ranking] == [CONFIRM_INTENT, "talk_to_human"]


def test_understood_intent_looks_under_markers() -> None:
    ranking = _ranking(("nlu_fallback", 0.4), ("greet", 0.3))
    assert understood_intent("nlu_fallback", ranking) == "greet"
    assert understood_intent("help", ranking) == "help"
    assert understood_intent("nlu_fallback", _ranking(("nlu_fallback", 0.4))) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"thresholds": {"goodbye": 1.5}},
        {"thresholds": {"goodbye": True}},
        {"thresholds": ["goodbye"]},
        {"thresholds": {"nlu_fallback": 0.5}},
    ],
)
def test_bad_thresholds_are_refused(raw) -> None:
    with pytest.raises(ValueError):
        thresholds_from(raw)


def test_thresholds_are_read() -> None:
    assert thresholds_from({"thresholds": {"goodbye": 1, "talk_to_human": 0.5}}) == {
        "goodbye": 1.0,
        "talk_to_human": 0.5,
    }
    assert thresholds_from({}) == {}
