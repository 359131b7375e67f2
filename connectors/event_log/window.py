"""The bounded tracker: the last user turns of a session behind events that carry the state the
older turns established (see docs/DESIGN.md, "Flat turns").

The window starts at the ``action_listen`` before the ``window_turns``-th last user message
(:func:`window_start`). What came before it is replaced by a few events shaped like a session
start (:func:`carried_state`: every slot not at its initial value, the active form and its
requested slot), marked ``metadata.carried_state`` and never stored. As turns leave the window,
the carried state is advanced over them (:func:`advance_window`), so each event is replayed once
more over a conversation and a turn's cost does not grow with the session.
"""

from __future__ import annotations

import copy
import itertools
from collections import deque
from typing import Iterable, List, Optional, Sequence

from rasa.shared.core.constants import (
    ACTION_LISTEN_NAME,
    ACTION_SESSION_START_NAME,
    REQUESTED_SLOT,
)
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    ConversationPaused,
    Event,
    LoopInterrupted,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.event_log.cache import SessionCopy

#: Metadata key that marks the events carrying the state of the turns before the window;
#: they are never stored, and the LLM's history leaves them out.
CARRIED = "carried_state"


def is_carried(event: Event) -> bool:
    return bool(event.metadata) and CARRIED in event.metadata


def advance_window(session: SessionCopy, window_turns: int, domain: Domain) -> None:
    """Moves the session's window to start ``window_turns`` user messages from its end.

    The state before the new start is rebuilt from the old carried state plus the events that
    leave the window (a replay of whole turns, so a revert inside one stays inside it); over
    a conversation each event is replayed once more, so the cost per turn stays flat.
    """
    events = session.tracker.events
    start = window_start(events, window_turns)
    if start <= session.window_start:
        return
    leaving = list(itertools.islice(events, session.window_start, start))
    before = DialogueStateTracker.from_events(
        session.tracker.sender_id, session.carried + leaving, slots=domain.slots
    )
    session.carried = carried_state(before, events[start].timestamp)
    session.window_start = start


def window_start(events: Sequence[Event], window_turns: int) -> int:
    """Index of the ``action_listen`` before the ``window_turns``-th last user message, or 0
    when the session is not longer than that. Walks back from the end only."""
    users = 0
    index = len(events)
    for event in reversed(events):
        index -= 1
        if isinstance(event, UserUttered):
            users += 1
            if users == window_turns:
                break
    else:
        return 0
    while index > 0:
        index -= 1
        event = events[index]
        if isinstance(event, ActionExecuted) and event.action_name == ACTION_LISTEN_NAME:
            return index
    return 0


def carried_state(tracker: DialogueStateTracker, timestamp: float) -> List[Event]:
    """Events that rebuild ``tracker``'s state on an empty tracker, shaped like a session start
    (with the active form, if any, just run): the start of a session as Rasa would carry it
    over, so policies see the carried slots and form on the first state of the window. A
    conversation a person holds (``ConversationPaused``, connectors/handoff/) stays paused
    however many of the customer's messages push the pause out of the window."""
    mark = {CARRIED: True}
    carried: List[Event] = [
        ActionExecuted(ACTION_SESSION_START_NAME, timestamp=timestamp, metadata=mark),
        SessionStarted(timestamp=timestamp, metadata=mark),
    ]
    for name, slot in tracker.slots.items():
        if name != REQUESTED_SLOT and slot.value != slot.initial_value:
            carried.append(SlotSet(name, slot.value, timestamp=timestamp, metadata=mark))
    loop = tracker.active_loop_name
    if loop:
        carried.append(ActionExecuted(loop, timestamp=timestamp, metadata=mark))
        carried.append(ActiveLoop(loop, timestamp=timestamp, metadata=mark))
        if tracker.active_loop is not None and tracker.active_loop.is_interrupted:
            carried.append(LoopInterrupted(True, timestamp=timestamp, metadata=mark))
    requested = tracker.get_slot(REQUESTED_SLOT)
    if requested is not None:
        carried.append(SlotSet(REQUESTED_SLOT, requested, timestamp=timestamp, metadata=mark))
    if tracker.is_paused():
        carried.append(ConversationPaused(timestamp=timestamp, metadata=mark))
    return carried


def copy_tracker(
    source: DialogueStateTracker, max_event_history: Optional[int], events: Iterable[Event]
) -> DialogueStateTracker:
    """An independent tracker with ``source``'s state and ``events``, made without replaying.

    Replaying costs time in proportion to the session's length, on every turn; copying the
    state does not. Event objects are shared, not copied: Rasa appends events to a tracker but
    treats logged events as immutable. The active loop is copied too: Rasa changes it in place
    (``interrupt_loop``, ``reject_action``).
    """
    tracker = copy.copy(source)
    for name, value in vars(source).items():
        if isinstance(value, (dict, list, set)) and name != "slots":
            setattr(tracker, name, copy.deepcopy(value))
    tracker.active_loop = copy.deepcopy(source.active_loop)
    tracker.slots = {name: copy.copy(slot) for name, slot in source.slots.items()}
    tracker._max_event_history = max_event_history
    tracker.events = deque(events, maxlen=max_event_history)
    return tracker
