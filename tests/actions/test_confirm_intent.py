"""``action_confirm_intent`` (actions/confirm_intent.py): asks the question of the intent the
confirmation gate stood in for and offers it; on the answer it takes the offer; it never acts
or guesses when a gated intent has no question."""

from __future__ import annotations

import asyncio

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.confirm_intent import ActionAcceptOffer, ActionConfirmIntent

DOMAIN = {"responses": {"utter_confirm_talk_to_human": [{"text": "Do you want a person?"}]}}


def _tracker(intent: str, *ranked: str, offer=None) -> Tracker:
    ranking = [{"name": name, "confidence": 0.4} for name in (intent, *ranked)]
    return Tracker(
        sender_id="c_test",
        slots={"offer": offer},
        latest_message={"intent": ranking[0], "intent_ranking": ranking, "text": "t"},
        events=[],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name=None,
    )


def _run(tracker: Tracker):
    dispatcher = CollectingDispatcher()
    events = asyncio.run(ActionConfirmIntent().run(dispatcher, tracker, DOMAIN))
    return [m.get("response") for m in dispatcher.messages], events


def test_an_unsure_act_is_asked_about_and_offered() -> None:
    said, events = _run(_tracker("nlu_confirm", "talk_to_human", "send_by_sms"))
    assert said == ["utter_confirm_talk_to_human"]
    assert events == [SlotSet("offer", "talk_to_human")]


def test_nothing_is_asked_unless_the_gate_stood_in() -> None:
    said, events = _run(_tracker("talk_to_human", offer=None))
    assert said == ["utter_default"]
    assert events == []


def test_a_yes_takes_the_offer() -> None:
    dispatcher = CollectingDispatcher()
    tracker = _tracker("affirm", offer="talk_to_human")
    events = asyncio.run(ActionAcceptOffer().run(dispatcher, tracker, DOMAIN))
    assert dispatcher.messages == []
    assert events == [SlotSet("offer", None)]


def test_an_intent_without_its_question_is_neither_acted_on_nor_offered() -> None:
    said, events = _run(_tracker("nlu_confirm", "send_by_sms"))
    assert said == ["utter_default"]
    assert events == []
