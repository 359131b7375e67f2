"""This process's copies of last sessions (connectors/event_log/cache.py): bounded, least recently
read dropped first; and tracker positions that die with their trackers."""

from __future__ import annotations

import gc

import pytest
from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.event_log.cache import LogPositions, SessionCache, SessionCopy

pytestmark = pytest.mark.unit


def copy_of(cid: str) -> SessionCopy:
    tracker = DialogueStateTracker(cid, [])
    return SessionCopy(tracker, log_length=1, session_start=0, last_raw_event=b"")


def test_the_least_recently_read_session_goes_first() -> None:
    cache = SessionCache(2)
    a, b, c = copy_of("a"), copy_of("b"), copy_of("c")
    cache.put("a", a)
    cache.put("b", b)
    cache.touch("a")
    cache.put("c", c)
    assert cache.get("a") is a and cache.get("b") is None and cache.get("c") is c
    cache.drop("a")
    cache.drop("a")  # dropping twice is fine
    assert cache.get("a") is None
    cache.clear()
    assert cache.get("c") is None


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = SessionCache(0)
    cache.put("a", copy_of("a"))
    assert cache.get("a") is None


def test_a_position_lives_as_long_as_its_tracker() -> None:
    positions = LogPositions()
    tracker = DialogueStateTracker.from_events("c_1", [UserUttered("hi")])
    positions.remember(tracker, 7)
    found = positions.get(tracker)
    assert found is not None and found.log_length == 7 and found.last_event is tracker.events[-1]
    assert positions.get(DialogueStateTracker.from_events("c_1", [UserUttered("hi")])) is None
    del tracker, found
    gc.collect()
    assert positions._positions == {}
