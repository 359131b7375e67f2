"""The window arithmetic (connectors/event_log/window.py), on trackers built directly: where the
window starts, what carries the state before it, and that advancing it keeps the state."""

from __future__ import annotations

from typing import List

import pytest
from rasa.shared.core.constants import ACTION_LISTEN_NAME, REQUESTED_SLOT
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.event_log.cache import SessionCopy
from connectors.event_log.window import (
    CARRIED,
    advance_window,
    carried_state,
    copy_tracker,
    is_carried,
    window_start,
)

pytestmark = pytest.mark.unit

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [inform]
slots:
  order_number:
    type: text
    mappings: [{type: custom}]
  channel:
    type: text
    mappings: [{type: custom}]
forms:
  refund_form:
    required_slots: [order_number]
"""
)


def turn(index: int) -> List[Event]:
    """One user turn: listen, the user's message, a bot action."""
    return [
        ActionExecuted(ACTION_LISTEN_NAME, timestamp=index),
        UserUttered(f"message {index}", {"name": "inform"}, timestamp=index),
        ActionExecuted("utter_ok", timestamp=index),
    ]


def session(turns: int) -> List[Event]:
    events: List[Event] = [ActionExecuted("action_session_start"), SessionStarted()]
    for index in range(turns):
        events += turn(index)
    return events


def test_the_window_starts_at_the_listen_before_the_nth_last_user_message() -> None:
    events = session(10)
    start = window_start(events, 3)
    assert isinstance(events[start], ActionExecuted)
    assert events[start].action_name == ACTION_LISTEN_NAME
    assert [e.text for e in events[start:] if isinstance(e, UserUttered)] == [
        "message 7",
        "message 8",
        "message 9",
    ]
    assert window_start(events, 10) == 2  # the first turn's listen
    assert window_start(events, 11) == 0  # not longer than the window: all of it


def test_the_carried_state_rebuilds_slots_and_the_active_form() -> None:
    events = [
        *session(1),
        SlotSet("channel", "sms"),
        ActionExecuted("refund_form"),
        ActiveLoop("refund_form"),
        SlotSet(REQUESTED_SLOT, "order_number"),
    ]
    tracker = DialogueStateTracker.from_events("c_1", events, slots=DOMAIN.slots)
    carried = carried_state(tracker, timestamp=42.0)
    assert all(is_carried(event) and event.timestamp == 42.0 for event in carried)
    rebuilt = DialogueStateTracker.from_events("c_1", carried, slots=DOMAIN.slots)
    assert rebuilt.get_slot("channel") == "sms"
    assert rebuilt.active_loop_name == "refund_form"
    assert rebuilt.get_slot(REQUESTED_SLOT) == "order_number"
    assert rebuilt.get_slot("order_number") is None
    assert not is_carried(UserUttered("hi"))
    assert not is_carried(SlotSet("channel", "sms", metadata={"other": True}))
    assert is_carried(SlotSet("channel", "sms", metadata={CARRIED: True}))


def test_advancing_the_window_keeps_the_state_of_the_turns_that_left_it() -> None:
    events = session(4) + [SlotSet("order_number", "12345")] + session(0)[2:]
    for index in range(4, 12):
        events += turn(index)
    tracker = DialogueStateTracker.from_events("c_2", events, slots=DOMAIN.slots)
    copy = SessionCopy(tracker=tracker, log_length=len(events), session_start=0, last_raw_event=b"")
    advance_window(copy, 3, DOMAIN)
    first = copy.window_start
    assert first == window_start(list(tracker.events), 3)
    window = copy_tracker(
        tracker, None, [*copy.carried, *list(tracker.events)[copy.window_start :]]
    )
    assert window.get_slot("order_number") == "12345"
    assert len(window.events) == len(copy.carried) + len(tracker.events) - first
    # The window moves forward only; the copy's tracker is untouched by handing one out.
    advance_window(copy, 5, DOMAIN)
    assert copy.window_start == first
    window.update(SlotSet("order_number", "99999"))
    assert tracker.get_slot("order_number") == "12345"
