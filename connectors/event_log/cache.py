"""This process's copies of conversations' last sessions, and where the trackers it handed out
stand in the log.

A read answers from the copy and catches up only with the events written since (by this
replica or another); a save appends only the events after the last one the log is known to
hold for that tracker. Both are per process and bounded: the copies are the
``cached_conversations`` most recently read, the positions live as long as their trackers.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional

from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker


@dataclass
class SessionCopy:
    """This process's replay of one conversation's last session, as of ``log_length``.

    The tracker is never handed out (callers get copies), so nothing but the log changes it.
    """

    tracker: DialogueStateTracker
    log_length: int
    session_start: int
    last_raw_event: bytes
    #: Index in ``tracker.events`` where the handed-out window begins (an ``action_listen``
    #: before a user message), and the events that rebuild the state before it.
    window_start: int = 0
    carried: List[Event] = dataclasses.field(default_factory=list)


@dataclass
class LogPosition:
    """Where a handed-out tracker stands in the log: every event up to ``last_event`` is
    stored, and the log had ``log_length`` entries then."""

    tracker_ref: weakref.ref[DialogueStateTracker]
    log_length: int
    last_event: Optional[Event]


class LogPositions:
    """Log positions of the trackers this store handed out or saved, without keeping them alive.

    Trackers define ``__eq__`` and so cannot be weak dictionary keys; entries are keyed by
    ``id`` and dropped when their tracker is collected.
    """

    def __init__(self) -> None:
        self._positions: Dict[int, LogPosition] = {}

    def get(self, tracker: DialogueStateTracker) -> Optional[LogPosition]:
        position = self._positions.get(id(tracker))
        if position is None or position.tracker_ref() is not tracker:
            return None
        return position

    def remember(self, tracker: DialogueStateTracker, log_length: int) -> None:
        key = id(tracker)
        positions = self._positions

        def forget(ref: weakref.ref[DialogueStateTracker]) -> None:
            if key in positions and positions[key].tracker_ref is ref:
                del positions[key]

        positions[key] = LogPosition(
            tracker_ref=weakref.ref(tracker, forget),
            log_length=log_length,
            last_event=tracker.events[-1] if tracker.events else None,
        )


class SessionCache:
    """The last sessions this process replayed, least recently read dropped first."""

    def __init__(self, size: int) -> None:
        #: How many conversations are kept; 0 keeps none.
        self.size = size
        self._sessions: OrderedDict[str, SessionCopy] = OrderedDict()

    def get(self, conversation_id: str) -> Optional[SessionCopy]:
        return self._sessions.get(conversation_id)

    def touch(self, conversation_id: str) -> None:
        """Marks the conversation as read just now."""
        self._sessions.move_to_end(conversation_id)

    def put(self, conversation_id: str, session: SessionCopy) -> None:
        if not self.size:
            return
        self._sessions[conversation_id] = session
        self._sessions.move_to_end(conversation_id)
        while len(self._sessions) > self.size:
            self._sessions.popitem(last=False)

    def drop(self, conversation_id: str) -> None:
        self._sessions.pop(conversation_id, None)

    def clear(self) -> None:
        self._sessions = OrderedDict()
