"""Events as the log holds them: one JSON document per event, exactly as Rasa serialises it.

A save appends only what the log lacks: the events after the last one this store knows is
stored (:func:`events_after`), or, for a tracker of unknown origin, the tracker's events minus
the log's, compared by content (:func:`without`, with :func:`replayed_forms` for the events a
replay of the log changes). Reading parses each entry with the event class its type names
(:func:`event_from`), without Rasa's search through every event class.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from rasa.shared.core.constants import ACTION_SESSION_START_NAME
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, Event
from rasa.shared.core.trackers import DialogueStateTracker


@dataclass
class PendingEvent:
    """A tracker event not yet in the log, serialised once for the append script."""

    raw: str
    starts_session: bool

    @classmethod
    def of(cls, event: Event) -> PendingEvent:
        return cls(
            raw=json.dumps(event.as_dict(), ensure_ascii=False),
            starts_session=isinstance(event, ActionExecuted)
            and event.action_name == ACTION_SESSION_START_NAME,
        )


def events_after(
    tracker: DialogueStateTracker, last_stored: Optional[Event]
) -> Optional[List[Event]]:
    """The tracker's events after ``last_stored`` (None if it is no longer in the tracker).

    Searching from the end costs only the number of new events, however long the session.
    """
    if last_stored is None:
        return list(tracker.events)
    new_events: List[Event] = []
    for event in reversed(tracker.events):
        if event is last_stored:
            new_events.reverse()
            return new_events
        new_events.append(event)
    return None


def without(
    pending: List[PendingEvent],
    stored: Sequence[str],
    replayed: Optional[Dict[str, str]] = None,
) -> List[PendingEvent]:
    """``pending`` minus the events found in ``stored``, each stored event matching once.

    ``stored`` holds canonical forms (``_canonical``); ``replayed`` maps other forms of stored
    events to their stored form (see ``replayed_forms``).
    """
    if not stored:
        return pending
    remaining = Counter(stored)
    missing = []
    for event in pending:
        key = canonical(event.raw)
        if remaining[key] == 0 and replayed:
            key = replayed.get(key, key)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            missing.append(event)
    return missing


def replayed_forms(
    conversation_id: str,
    domain: Domain,
    parsed: Sequence[Dict[str, Any]],
    logged: Sequence[str],
) -> Dict[str, str]:
    """Logged events that a replay of the log changes: replayed form -> logged form.

    ``parsed`` and ``logged`` are the log's events as dicts and in canonical form; the
    replay may change the dicts. Rasa's ``UserUttered`` read from a dict shares one entity
    list between ``entities`` and ``parse_data``, so replaying a later ``EntitiesAdded``
    (TEDPolicy's) adds to the logged user message, and every tracker rebuilt from the log
    (Rasa's HTTP API replacing events, ``rasa interactive``) serialises it differently from
    the log. Replaying here shows which events come out changed, and how, whatever event
    does the changing.
    """
    tracker = DialogueStateTracker(conversation_id, domain.slots)
    replayed_events = []
    for parameters, logged_form in zip(parsed, logged, strict=True):
        event = event_from(parameters)
        if event is not None:
            tracker.update(event)
            replayed_events.append((logged_form, event))
    replayed = {}
    for logged_form, event in replayed_events:
        # Read from JSON, the event holds only JSON values: no round trip needed to compare.
        replayed_form = canonical_form(event.as_dict())
        if replayed_form != logged_form:
            replayed[replayed_form] = logged_form
    return replayed


def canonical(raw: Union[bytes, str]) -> str:
    return canonical_form(json.loads(raw))


def canonical_form(value: Any) -> str:
    """One spelling per event content, whatever its key order, for comparing events."""
    return json.dumps(value, sort_keys=True)


def apply_events(tracker: DialogueStateTracker, raw_events: Iterable[bytes]) -> None:
    for raw in raw_events:
        event = event_from(json.loads(raw))
        if event is not None:
            tracker.update(event)


def event_from(parameters: Dict[str, Any]) -> Optional[Event]:
    """What Event.from_parameters does, minus its search through every Event subclass for
    each event, which is most of the time a first read of a long session takes."""
    event_class = _event_class(parameters.get("event"))
    return event_class._from_parameters(parameters) if event_class else None


@functools.cache
def _event_class(type_name: Optional[str]) -> Optional[type[Event]]:
    return Event.resolve_by_type(type_name) if type_name else None
