"""The hand-off's offer of a callback to a caller nobody can take now: when it is made (no
support line, or the team away; only if calls can be placed), and, on the shared stack, what
the caller's yes and no do (the rules and actions as trained and served)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import httpx
import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff import ActionHandoffAfterCallbackOffer, ActionHandoffToHuman
from omnichannel.callbacks.items import BY_HANDOFF
from omnichannel.outbound.items import SCHEDULED
from omnichannel.turn_context import OFFER_CALLBACK
from testkit.stack import RasaStack
from tests.actions.helpers import (
    customer_conversation,
    new_conversation,
    say,
    texts,
    tracker,
)
from tests.connectors.inbox.helpers import callbacks, cancel_callbacks
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone

CALLS = {"VAPI_API_KEY": "vapi-key", "VAPI_PHONE_NUMBER_ID": "pn-1"}


def _domain() -> Dict[str, Any]:
    with open("domain.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _call(sender: str) -> Tracker:
    latest = {"text": "let me speak to a person", "intent": {"name": "talk_to_human"}}
    slots = {"channel": "voice", "offer": None}
    return Tracker(sender, slots, latest, [], False, None, {}, "action_listen")


def _run(action: ActionHandoffToHuman, sender: str) -> tuple:
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, _call(sender), _domain()))
    return [m.get("response") for m in dispatcher.messages], events, dispatcher.messages


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, rasa_stack: RasaStack) -> pytest.MonkeyPatch:
    """This process's settings: calls can be placed, no support line, always open; the
    conversations of the stack's Redis."""
    monkeypatch.setenv("REDIS_URL", rasa_stack.env["REDIS_URL"])
    for name, value in CALLS.items():
        monkeypatch.setenv(name, value)
    for name in ("HANDOFF_PHONE_NUMBER", "HANDOFF_HOURS", "HANDOFF_HOLIDAYS", "HANDOFF_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def caller(rasa_stack: RasaStack) -> str:
    """A caller's conversation, with their number on file."""
    return customer_conversation(rasa_stack)[0]


def test_a_caller_is_offered_a_callback_without_a_support_line(calls, caller) -> None:
    responses, events, _ = _run(ActionHandoffToHuman(), caller)
    assert responses == ["utter_handoff_offer_callback"]
    assert events == [{"event": "slot", "timestamp": None, "name": "offer", "value": "callback"}]
    offer = _domain()["responses"]["utter_handoff_offer_callback"][0]["text"]
    assert "call you back" in offer and "put you through to a person" in offer
    # A caller with no number of their own (a web call) is not offered what cannot be booked.
    assert "utter_handoff_offer_callback" not in _run(ActionHandoffToHuman(), new_conversation())[0]


def test_out_of_hours_the_offer_says_when_the_team_is_back_even_with_a_line(calls, caller) -> None:
    today = datetime.now(timezone.utc).date()
    calls.setenv("HANDOFF_PHONE_NUMBER", "+14155550100")
    calls.setenv("HANDOFF_HOLIDAYS", f"{today},{today + timedelta(days=1)}")
    responses, events, messages = _run(ActionHandoffToHuman(), caller)
    assert responses == ["utter_handoff_offer_callback_away"]
    # Closed today and tomorrow: back the day after, at midnight (the default hours).
    assert messages[0]["handoff_back"].startswith("on ")
    assert " at 0:00" in messages[0]["handoff_back"]
    assert events[0]["value"] == OFFER_CALLBACK


def test_with_a_line_in_hours_or_no_calls_there_is_no_offer(calls, caller) -> None:
    calls.setenv("HANDOFF_PHONE_NUMBER", "+14155550100")
    assert _run(ActionHandoffToHuman(), caller)[0] == ["utter_handoff_transfer"]
    # Without VAPI's key no call can be placed: nothing is offered.
    calls.delenv("VAPI_API_KEY")
    calls.setenv("HANDOFF_HOLIDAYS", str(datetime.now(timezone.utc).date()))
    assert _run(ActionHandoffToHuman(), caller)[0] == ["utter_handoff_transfer"]


def test_after_a_no_the_hand_off_is_not_offered_again(calls, caller) -> None:
    calls.setenv("HANDOFF_PHONE_NUMBER", "+14155550100")
    calls.setenv("HANDOFF_HOLIDAYS", str(datetime.now(timezone.utc).date()))
    assert _run(ActionHandoffAfterCallbackOffer(), caller)[0] == ["utter_handoff_transfer"]


# -- on the stack: the rules after the offer ----------------------------------------------------


def _offered(stack: RasaStack, sender: str) -> None:
    """The conversation as the offer leaves it (the stack itself has a support line)."""
    answer = httpx.post(
        f"{stack.base_url}/conversations/{sender}/tracker/events",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        json=[
            {"event": "slot", "name": "channel", "value": "voice"},
            {"event": "slot", "name": "offer", "value": OFFER_CALLBACK},
        ],
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def _offer_slot(stack: RasaStack, sender: str) -> Any:
    return tracker(stack, sender)["slots"].get("offer")


@pytest.mark.rasa_server
def test_yes_books_the_callback_the_assistant_places(rasa_stack: RasaStack, stack_redis) -> None:
    # A customer who texted us: their number is on file, with consent to contact it.
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "hi")
    sender = conversation_of(stack_redis, phone)
    _offered(rasa_stack, sender)
    try:
        said: List[str] = texts(say(rasa_stack, sender, "yes please", channel="voice"))
        assert len(said) == 1 and re.match(r"Done: I'll call you back (today|tomorrow) at", said[0])
        [item] = callbacks(rasa_stack, sender)
        assert (item.status, item.source, item.customer_requested) == (
            SCHEDULED,
            BY_HANDOFF,
            False,
        )
        opening = _domain()["responses"]["utter_callback_opening"][0]["text"]
        assert item.payload["opening"] == opening
        assert _offer_slot(rasa_stack, sender) is None
    finally:
        cancel_callbacks(rasa_stack, sender)


@pytest.mark.rasa_server
def test_no_goes_on_with_the_hand_off(rasa_stack: RasaStack) -> None:
    sender, _ = customer_conversation(rasa_stack)
    _offered(rasa_stack, sender)
    said = say(rasa_stack, sender, "no", channel="voice")
    # The stack has a support line: the hand-off goes on to the transfer, with no new offer.
    assert [m["custom"]["call_control"] for m in said if m.get("custom")] == ["transfer"], said
    assert not any("call you back" in text for text in texts(said))
    assert callbacks(rasa_stack, sender) == []
    assert _offer_slot(rasa_stack, sender) is None
