"""The bounded tracker (connectors/tracker_store.py ``window_turns``) and the Rasa patches
(connectors/rasa_patches.py), on a real redis-server: what Rasa gets is the carried state plus
the window, it rebuilds the same state as the whole session, saving it stores only new events,
and the actions that quote the conversation still get all of it."""

from __future__ import annotations

from typing import List

import jsonschema
import pytest
import rasa
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from rasa_sdk import Tracker as SdkTracker
from rasa_sdk.executor import CollectingDispatcher

from actions.slot_mappings import ActionExtractTurnContext
from connectors import rasa_patches
from connectors.event_log.window import CARRIED
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.errors import ConfigError
from omnichannel.redis_client import conversation_key
from tests.redis_matrix import sync_client

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, check_order, inform, ask_policy]
entities: [order_number]
slots:
  channel:
    type: text
    mappings: [{type: custom}]
  order_number:
    type: text
    mappings: [{type: custom}]
  interrupted:
    type: bool
    mappings: [{type: custom}]
  unheard:
    type: any
    mappings: [{type: custom}]
  offer:
    type: text
    mappings: [{type: custom}]
forms:
  order_form:
    required_slots: [order_number]
responses:
  utter_policy: [{text: "Returns within 30 days. Items unused. Refunds in a week."}]
  utter_ask_order_number: [{text: "What's your order number?"}]
actions: [action_llm_fallback, action_other]
"""
)


def user(text: str, intent: str, **metadata: object) -> UserUttered:
    return UserUttered(
        text,
        intent={"name": intent, "confidence": 0.9},
        input_channel="webchat",
        metadata={"channel": "chat", **metadata},
    )


def opening() -> List[Event]:
    """A session that sets the order number, then opens a form that asks for something."""
    return [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        user("it's 12345", "inform"),
        SlotSet("order_number", "12345"),
        SlotSet("channel", "chat"),
        ActionExecuted("action_listen"),
        user("where is my order", "check_order"),
        ActionExecuted("order_form"),
        ActiveLoop("order_form"),
        SlotSet("requested_slot", "order_number"),
        BotUttered(
            "What's your order number?", metadata={"utter_action": "utter_ask_order_number"}
        ),
        ActionExecuted("action_listen"),
    ]


def digression(index: int) -> List[Event]:
    return [
        user(f"what's your refund policy ({index})", "ask_policy"),
        ActionExecuted("utter_policy"),
        BotUttered("Returns within 30 days.", metadata={"utter_action": "utter_policy"}),
        ActionExecuted("order_form"),
        BotUttered("What's your order number?"),
        ActionExecuted("action_listen"),
    ]


def conversation(digressions: int) -> List[Event]:
    events = opening()
    for index in range(digressions):
        events += digression(index)
    return events


def store_for(url: str, **options: object) -> RedisEventLogTrackerStore:
    return RedisEventLogTrackerStore(domain=DOMAIN, host=url, **options)


async def stored(store: RedisEventLogTrackerStore, cid: str, events: List[Event]) -> None:
    tracker = store.init_tracker(cid)
    for event in events:
        tracker.update(event)
    await store.save(tracker)


def state(tracker: DialogueStateTracker) -> tuple:
    return (tracker.current_slot_values(), tracker.active_loop_name, tracker.latest_action_name)


async def test_a_long_session_is_carried_state_plus_the_last_user_turns(redis_url: str) -> None:
    store = store_for(redis_url, window_turns=3)
    events = conversation(12)
    await stored(store, "c_long", events)
    whole = DialogueStateTracker.from_events("c_long", events, slots=DOMAIN.slots)

    tracker = await store.retrieve("c_long")

    users = [e for e in tracker.events if isinstance(e, UserUttered)]
    assert [u.text for u in users] == [f"what's your refund policy ({i})" for i in (9, 10, 11)]
    carried = [e for e in tracker.events if (e.metadata or {}).get(CARRIED)]
    assert tracker.events[len(carried) - 1] is carried[-1]  # all of them in front
    assert {e.key: e.value for e in carried if isinstance(e, SlotSet)} == {
        "order_number": "12345",
        "channel": "chat",
        "requested_slot": "order_number",
    }
    # The state handed out, and the state Rasa rebuilds by replaying it (tracker.copy()),
    # are those of the whole session.
    assert state(tracker) == state(whole)
    assert state(tracker.copy()) == state(whole)
    assert tracker.active_loop_name == "order_form"

    # Forty turns later the tracker holds as many events as it did.
    longer = await store.retrieve("c_long")
    for event in conversation(52)[len(events) :]:
        longer.update(event)
    await store.save(longer)
    assert len((await store.retrieve("c_long")).events) == len(tracker.events)


async def test_saving_a_windowed_tracker_stores_only_its_new_events(redis_url: str) -> None:
    store = store_for(redis_url, window_turns=2)
    events = conversation(6)
    await stored(store, "c_save", events)
    redis = sync_client(redis_url)
    key = conversation_key("c_save", "events")

    tracker = await store.retrieve("c_save")
    new_turn = digression(99)
    for event in new_turn:
        tracker.update(event)
    await store.save(tracker)
    assert redis.llen(key) == len(events) + len(new_turn)

    # A tracker the store did not hand out (Rasa's replayed copy) is compared with the log:
    # its carried events are not taken for new ones.
    other = (await store.retrieve("c_save")).copy()
    other.update(ActionExecuted("action_other"))
    await store.save(other)
    assert redis.llen(key) == len(events) + len(new_turn) + 1
    assert b"carried_state" not in b"".join(redis.lrange(key, 0, -1))


async def test_history_actions_get_the_whole_session_and_others_the_window(
    redis_url: str,
) -> None:
    store = store_for(redis_url, window_turns=2)
    events = conversation(8)
    await stored(store, "c_history", events)
    tracker = (await store.retrieve("c_history")).copy()  # what an action is run with
    tracker.update(user("zxqv", "nlu_fallback"))

    history = store.session_history(tracker)
    assert [e.as_dict() for e in history] == [e.as_dict() for e in events + [tracker.events[-1]]]

    rasa_patches.install()
    rasa_patches.send_history_to(frozenset({"action_llm_fallback"}), store.session_history)
    llm = RemoteAction("action_llm_fallback", None)._action_call_format(tracker, DOMAIN)
    other = RemoteAction("action_other", None)._action_call_format(tracker, DOMAIN)
    assert llm["tracker"]["events"] == [e.as_dict() for e in history]
    assert other["tracker"]["events"] == [e.as_dict() for e in tracker.events]
    assert len(other["tracker"]["events"]) < len(llm["tracker"]["events"])


async def test_a_conversation_held_by_a_person_stays_paused_past_the_window(
    redis_url: str,
) -> None:
    """A customer who keeps writing while a person holds the conversation pushes the pause out
    of the window: the carried state holds it, and a resume later is carried as well."""
    store = store_for(redis_url, window_turns=2)
    # As connectors/handoff/ logs a held turn: the message, its slots, the bot listening.
    events = opening() + [ConversationPaused()]
    for index in range(6):
        events += [
            user(f"are you there? ({index})", "greet"),
            SlotSet("channel", "sms"),
            ActionExecuted("action_listen"),
        ]
    await stored(store, "c_held", events)
    tracker = await store.retrieve("c_held")
    assert tracker.is_paused() and tracker.copy().is_paused()
    carried = [e for e in tracker.events if (e.metadata or {}).get(CARRIED)]
    assert any(isinstance(e, ConversationPaused) for e in carried)
    assert tracker.get_slot("order_number") == "12345"

    tracker.update(ConversationResumed())
    for index in range(4):
        tracker.update(user(f"hello again ({index})", "greet"))
        tracker.update(ActionExecuted("action_listen"))
    await store.save(tracker)
    resumed = await store.retrieve("c_held")
    assert not resumed.is_paused()
    assert not any(isinstance(e, ConversationPaused) for e in resumed.events)


async def test_window_turns_zero_hands_out_the_whole_session(redis_url: str) -> None:
    store = store_for(redis_url, window_turns=0)
    events = conversation(10)
    await stored(store, "c_whole", events)
    tracker = await store.retrieve("c_whole")
    assert [e.as_dict() for e in tracker.events] == [e.as_dict() for e in events]
    assert store.session_history(tracker) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    "reply",
    [
        {"events": [{"event": "slot", "name": "x", "value": 1}], "responses": []},
        {"events": "not a list"},
        {"events": [{"no_event_key": 1}]},
        {"responses": [1]},
    ],
)
def test_the_validator_built_once_judges_replies_as_jsonschema_validate_does(reply: dict) -> None:
    schema = RemoteAction.action_response_format_spec()
    try:
        jsonschema.validate(reply, schema)
        expected = None
    except jsonschema.ValidationError as error:
        expected = error.message
    rasa_patches.install()
    action = RemoteAction("action_other", None)
    if expected is None:
        assert action._validate_action_result(reply) is True
    else:
        with pytest.raises(jsonschema.ValidationError) as raised:
            action._validate_action_result(reply)
        assert raised.value.message.startswith(expected + ". Failed to validate")


@pytest.mark.unit
async def test_turn_context_in_process_sets_what_the_action_server_sets() -> None:
    """A barge-in on a call, then an answer to an offer: the in-process mapping and the action
    server's action compute the same slots from the same tracker."""
    barge_in = {
        "sent_text": "Returns within 30 days. Items unused. Refunds in a week.",
        "heard_text": "Returns within 30 days.",
        "heard_ratio": 0.4,
    }
    tracker = DialogueStateTracker.from_events(
        "c_turn",
        [
            ActionExecuted("action_session_start"),
            SessionStarted(),
            SlotSet("offer", "tracking_link"),
            ActionExecuted("action_listen"),
            UserUttered(
                "policy?",
                intent={"name": "ask_policy"},
                input_channel="vapi",
                metadata={"channel": "voice"},
            ),
            ActionExecuted("utter_policy"),
            BotUttered(
                "Returns within 30 days. Items unused. Refunds in a week.",
                # As Rasa stores a response's bot event: its domain metadata one level down.
                metadata={
                    "utter_action": "utter_refund_policy",
                    "metadata": {"sms_topic": "the refund policy"},
                },
            ),
            ActionExecuted("action_listen"),
            UserUttered(
                "wait what",
                intent={"name": "greet"},
                input_channel="vapi",
                metadata={"channel": "voice", "barge_in": barge_in},
            ),
        ],
        slots=DOMAIN.slots,
    )
    in_process = rasa_patches.turn_context_events(tracker)
    assert {e.key: e.value for e in in_process} == {
        "channel": "voice",
        "interrupted": True,
        "unheard": {
            "text": "Items unused. Refunds in a week.",
            "topic": "the refund policy",
            "channel": "voice",
            "offered": False,
        },
        "offer": None,
    }
    sdk_tracker = SdkTracker.from_dict(tracker.current_state(EventVerbosity.ALL))
    remote = await ActionExtractTurnContext().run(CollectingDispatcher(), sdk_tracker, {})
    assert [(e["name"], e["value"]) for e in remote] == [(e.key, e.value) for e in in_process]


@pytest.mark.unit
def test_the_patches_refuse_another_rasa_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rasa, "__version__", "3.7.0")
    with pytest.raises(RuntimeError, match="targets Rasa 3.6.21"):
        rasa_patches.install()


@pytest.mark.parametrize(
    "options",
    [
        {"window_turns": -1},
        {"window_turns": "a few"},
        {"rasa_patches": "maybe"},
        {"full_history_actions": "action_llm_fallback"},
    ],
)
def test_bad_window_options_are_config_errors(redis_url: str, options: dict) -> None:
    with pytest.raises(ConfigError):
        store_for(redis_url, **options)
