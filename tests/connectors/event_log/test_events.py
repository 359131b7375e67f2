"""Events as the log holds them (connectors/event_log/events.py): what a save appends, matched by
content against the log, each stored event once."""

from __future__ import annotations

import json

import pytest
from rasa.shared.core.events import ActionExecuted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.event_log.events import (
    PendingEvent,
    canonical,
    canonical_form,
    event_from,
    events_after,
    without,
)

pytestmark = pytest.mark.unit


def test_a_session_start_is_marked_for_the_append_script() -> None:
    assert PendingEvent.of(ActionExecuted("action_session_start")).starts_session
    assert not PendingEvent.of(ActionExecuted("action_listen")).starts_session
    assert json.loads(PendingEvent.of(SlotSet("a", "é")).raw)["value"] == "é"


def test_events_after_the_last_stored_one_searching_from_the_end() -> None:
    tracker = DialogueStateTracker.from_events(
        "c_1", [ActionExecuted("action_listen"), UserUttered("hi"), ActionExecuted("utter_hi")]
    )
    events = list(tracker.events)
    assert events_after(tracker, events[0]) == events[1:]
    assert events_after(tracker, events[-1]) == []
    assert events_after(tracker, None) == events
    assert events_after(tracker, UserUttered("hi")) is None  # equal, but not the stored object


def test_each_stored_event_matches_one_pending_event_whatever_its_key_order() -> None:
    hello = PendingEvent.of(UserUttered("hello", timestamp=1))
    again = PendingEvent.of(UserUttered("hello", timestamp=1))
    other = PendingEvent.of(UserUttered("bye", timestamp=2))
    stored = json.loads(hello.raw)
    reordered = json.dumps(dict(reversed(list(stored.items()))))
    assert canonical(reordered) == canonical_form(stored)
    assert without([hello, again, other], [canonical(reordered)]) == [again, other]
    assert without([hello], []) == [hello]


def test_events_are_read_by_the_class_their_type_names() -> None:
    event = event_from(UserUttered("hi", timestamp=3).as_dict())
    assert isinstance(event, UserUttered) and event.text == "hi" and event.timestamp == 3
    assert event_from({}) is None  # no type: skipped, as Rasa's own reader skips it
    with pytest.raises(ValueError, match="no_such_event"):
        event_from({"event": "no_such_event"})
