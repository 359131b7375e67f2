"""What a replica finds in the event log for a turn another replica may have run
(connectors/turns/once.py), on trackers built directly."""

from __future__ import annotations

import pytest
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.turns.once import find_user_event, replies_to

pytestmark = pytest.mark.unit


def tracker() -> DialogueStateTracker:
    return DialogueStateTracker.from_events(
        "c1",
        [
            ActionExecuted("action_listen"),
            UserUttered("hi", message_id="m1"),
            BotUttered("Hello!", {"buttons": [{"title": "Track", "payload": "/track"}]}),
            BotUttered("How can I help?"),
            ActionExecuted("action_listen"),
            UserUttered("track it", message_id="m2"),
            BotUttered("Which order?", {"image": None}),
            ActionExecuted("action_listen"),
            UserUttered("not answered yet", message_id="m3"),
        ],
    )


def test_finds_the_user_event_of_a_message_id() -> None:
    events = list(tracker().events)
    assert events[find_user_event(tracker(), "m2")].text == "track it"
    assert find_user_event(tracker(), "m9") is None


def test_replies_are_the_bot_messages_until_the_bot_listens_again() -> None:
    assert replies_to(tracker(), "m1") == [
        {"text": "Hello!", "buttons": [{"title": "Track", "payload": "/track"}]},
        {"text": "How can I help?"},
    ]
    assert replies_to(tracker(), "m2") == [{"text": "Which order?"}]
    assert replies_to(tracker(), "m3") == []
    assert replies_to(tracker(), "m9") == []
