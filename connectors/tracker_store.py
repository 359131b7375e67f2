"""Rasa tracker store that keeps each conversation as an append-only event log in Redis.

Rasa's own Redis store rewrites the whole conversation on every save and replays it on every
read, so a turn gets slower the longer a customer talks, and designers keep sessions long on
purpose here (context must survive a switch from phone to SMS to chat). This store appends only
the new events, with an atomic length check so two writers can never lose or duplicate an
event, and answers reads from a per-process copy of the last session that only has to catch up
with the events written since it was last read. A turn costs the same at turn 10 and at turn
1000.

The tracker it hands to Rasa is bounded (``window_turns``): the last user turns of the session,
behind a few events that carry the state the older events established (every slot, the active
form and its requested slot), so Rasa's policies, its action payloads and the action server
work on the same number of events at turn 10 and at turn 1,000 (see docs/DESIGN.md, "Flat turns").
The whole log stays in Redis for what needs history (the web chat, the LLM prompt: see
:meth:`RedisEventLogTrackerStore.session_history`).

Redis keys (hash-tagged by conversation, so one Cluster slot holds them all):

- ``omni:{<cid>}:events``: LIST, one JSON event per entry, exactly as Rasa serialises events.
- ``omni:{<cid>}:session_start``: STRING, offset in the list of the last
  ``action_session_start``, where the last conversation session begins.

Every append also PUBLISHes each new event (plus ``"conversation_id"``) on
``omni:{<cid>}:live``, so every open chat tab on any replica sees the turn.

Endpoint configuration::

    tracker_store:
      type: connectors.tracker_store.RedisEventLogTrackerStore
      url: ${REDIS_URL}
      inactivity_expiry: 2592000   # seconds, sliding; 0 = never expire
      window_turns: 5              # user turns Rasa sees behind the carried state; 0 = all
      rasa_patches: true           # connectors/rasa_patches.py (false = stock Rasa's turn)
      full_history_actions: [action_llm_fallback]   # get the whole session, not the window
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import logging
import os
import weakref
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Dict, Iterable, List, Optional, Sequence, TypeVar, Union

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import FailSafeTrackerStore, TrackerStore
from rasa.shared.core.constants import (
    ACTION_LISTEN_NAME,
    ACTION_SESSION_START_NAME,
    REQUESTED_SLOT,
)
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    Event,
    LoopInterrupted,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors import rasa_patches as patches
from omnichannel.errors import ConfigError
from omnichannel.insight import recorder as insight
from omnichannel.redis_client import (
    REDIS_FAILURES,
    AnyRedis,
    LuaScript,
    StateUnavailable,
    check_access_at_start_up,
    check_namespace,
    conversation_key,
    redis_client,
)
from omnichannel.redis_config import RASA_CONNECTION_OPTIONS, from_rasa_options

logger = logging.getLogger(__name__)

DEFAULT_INACTIVITY_EXPIRY = 30 * 24 * 3600
DEFAULT_CACHED_CONVERSATIONS = 1000
#: User turns a handed-out tracker holds behind its carried state. Memoization looks at 4
#: states and the longest rule at 5 (2 user turns); 5 turns leave room for a form's unhappy path.
DEFAULT_WINDOW_TURNS = 5
#: Actions whose payload carries the whole session: the LLM's prompt quotes the conversation,
#: "text me that" looks back for the latest thing worth texting.
DEFAULT_FULL_HISTORY_ACTIONS = (
    "action_llm_fallback",
    "action_handle_barge_in",
    "action_send_by_sms",
)
#: Metadata key that marks the events carrying the state of the turns before the window;
#: they are never stored, and the LLM's history leaves them out.
CARRIED = "carried_state"

#: How often a save re-reads and retries when other writers keep appending in between.
MAX_APPEND_ATTEMPTS = 20


# Appends the new events only if the log still has the length the writer last saw, so a
# writer that raced another one re-reads instead of overwriting or duplicating. Publishing in
# the same script means a chat tab sees exactly the events that were stored, in log order. An
# erased conversation (its tombstone, KEYS[3], omnichannel/erasure.py) takes no more events: a
# turn accepted before the erasure cannot write it back.
_APPEND = LuaScript(
    """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, 0}
end
local length = redis.call('LLEN', KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return {0, length}
end
if length == 0 then
  redis.call('DEL', KEYS[2])
end
local first = 6
local last = #ARGV
for i = first, last, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, last)))
end
local session_start = tonumber(ARGV[5])
if session_start >= 0 then
  redis.call('SET', KEYS[2], length + session_start)
end
local ttl = tonumber(ARGV[2])
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end
for i = first, last do
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. string.sub(ARGV[i], 2))
end
return {1, length + last - first + 1}
"""
)

# Reads the last session, or only its tail when the caller's copy (identified by its length,
# session start and last event) is still a prefix of the log: the common case, where this
# replica or another one appended a turn since this replica last read.
_READ = LuaScript(
    """
local length = redis.call('LLEN', KEYS[1])
if length == 0 then
  return {0, 0, 0, {}}
end
local session_start = tonumber(redis.call('GET', KEYS[2]) or '0')
local known = tonumber(ARGV[1])
local start = session_start
if known > 0 and known <= length and session_start == tonumber(ARGV[2])
    and redis.call('LINDEX', KEYS[1], known - 1) == ARGV[3] then
  start = known
end
return {length, session_start, start, redis.call('LRANGE', KEYS[1], start, -1)}
"""
)

_T = TypeVar("_T")


@dataclass
class _PendingEvent:
    """A tracker event not yet in the log, serialised once for the append script."""

    raw: str
    starts_session: bool

    @classmethod
    def of(cls, event: Event) -> _PendingEvent:
        return cls(
            raw=json.dumps(event.as_dict(), ensure_ascii=False),
            starts_session=isinstance(event, ActionExecuted)
            and event.action_name == ACTION_SESSION_START_NAME,
        )


@dataclass
class _SessionCopy:
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
class _LogPosition:
    """Where a handed-out tracker stands in the log: every event up to ``last_event`` is
    stored, and the log had ``log_length`` entries then."""

    tracker_ref: weakref.ref[DialogueStateTracker]
    log_length: int
    last_event: Optional[Event]


class _LogPositions:
    """Log positions of the trackers this store handed out or saved, without keeping them alive.

    Trackers define ``__eq__`` and so cannot be weak dictionary keys; entries are keyed by
    ``id`` and dropped when their tracker is collected.
    """

    def __init__(self) -> None:
        self._positions: Dict[int, _LogPosition] = {}

    def get(self, tracker: DialogueStateTracker) -> Optional[_LogPosition]:
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

        positions[key] = _LogPosition(
            tracker_ref=weakref.ref(tracker, forget),
            log_length=log_length,
            last_event=tracker.events[-1] if tracker.events else None,
        )


class RedisEventLogTrackerStore(TrackerStore):
    """Append-only, last-session-reading Redis tracker store (see the module docstring)."""

    def __init__(
        self,
        domain: Optional[Domain] = None,
        host: Optional[str] = None,
        event_broker: Optional[EventBroker] = None,
        inactivity_expiry: Union[int, str] = DEFAULT_INACTIVITY_EXPIRY,
        cached_conversations: Union[int, str] = DEFAULT_CACHED_CONVERSATIONS,
        key_prefix: Optional[str] = None,
        record_exp: Union[int, str, None] = None,
        window_turns: Union[int, str] = DEFAULT_WINDOW_TURNS,
        rasa_patches: Union[bool, str] = True,
        full_history_actions: Sequence[str] = DEFAULT_FULL_HISTORY_ACTIONS,
        **options: Any,
    ) -> None:
        # Rasa falls back to the in-memory store on AttributeError/ImportError here, so
        # misconfiguration is reported as ConfigError, which it lets through.
        unknown = sorted(set(options) - RASA_CONNECTION_OPTIONS)
        if unknown:
            raise ConfigError(
                "tracker_store: unknown option(s) for RedisEventLogTrackerStore: "
                + ", ".join(unknown)
            )
        self.url = host or None
        self.redis = from_rasa_options(os.environ, host=host, **options)
        self.namespace = check_namespace(key_prefix)
        check_access_at_start_up(self.redis)
        if record_exp not in (None, ""):
            inactivity_expiry = record_exp
        self.inactivity_expiry = _non_negative_int("inactivity_expiry", inactivity_expiry)
        self.cached_conversations = _non_negative_int("cached_conversations", cached_conversations)
        self.window_turns = _non_negative_int("window_turns", window_turns)
        if str(rasa_patches).lower() not in ("true", "false"):
            raise ConfigError(
                f"tracker_store: rasa_patches must be true or false, got {rasa_patches!r}"
            )
        if isinstance(full_history_actions, str) or not all(
            isinstance(name, str) for name in full_history_actions
        ):
            raise ConfigError(
                "tracker_store: full_history_actions must be a list of action names, "
                f"got {full_history_actions!r}"
            )
        if str(rasa_patches).lower() == "true":
            patches.install()
            patches.send_history_to(frozenset(full_history_actions), self.session_history)
        self._sessions: OrderedDict[str, _SessionCopy] = OrderedDict()
        self._positions = _LogPositions()
        super().__init__(domain, event_broker)

    @property
    def domain(self) -> Domain:
        return self._domain

    @domain.setter
    def domain(self, domain: Optional[Domain]) -> None:
        # Cached replays carry the old domain's slots; a new model must not see them.
        self._domain = domain or Domain.empty()
        self._sessions = OrderedDict()

    # -- Rasa's TrackerStore interface -------------------------------------------------------

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Appends the tracker's events that the log does not hold yet.

        Raises StateUnavailable when Redis fails; then nothing of this save is stored.
        """
        await self.stream_events(tracker)
        conversation_id = tracker.sender_id
        position = self._positions.get(tracker)
        new_events = _events_after(tracker, position.last_event) if position else None
        if position is None or new_events is None:
            expected, pending = await self._missing_from_log(tracker)
        else:
            expected, pending = position.log_length, [_PendingEvent.of(e) for e in new_events]

        for _ in range(MAX_APPEND_ATTEMPTS):
            appended, length = await self._append(conversation_id, expected, pending)
            if appended:
                self._positions.remember(tracker, length)
                # Exactly what this save added, once fleet-wide: the insight page's figures.
                insight.events_appended(self.redis, conversation_id, [e.raw for e in pending])
                return
            if length > expected:
                # Someone appended since we last looked: keep only what they did not write.
                written_meanwhile = await self._redis(
                    "read the log",
                    conversation_id,
                    self._client().lrange(self._events_key(conversation_id), expected, length - 1),
                )
                pending = _without(pending, [_canonical(raw) for raw in written_meanwhile])
                expected = expected + len(written_meanwhile)
            else:
                # The log is shorter than this tracker saw (expired, or lost in a crash).
                expected, pending = await self._missing_from_log(tracker)
        raise StateUnavailable(
            f"tracker store: the log of {_mask(conversation_id)} kept changing during a save"
        )

    async def retrieve(self, sender_id: str) -> Optional[DialogueStateTracker]:
        """The tracker of the conversation's last session (Rasa's ``retrieve`` contract)."""
        session = await self._last_session(sender_id)
        if session is None:
            return None
        return self._hand_out(session)

    async def retrieve_full_tracker(self, conversation_id: str) -> Optional[DialogueStateTracker]:
        """The tracker of every session; reads the whole log, unlike ``retrieve``."""
        raw_events = await self._redis(
            "read the log",
            conversation_id,
            self._client().lrange(self._events_key(conversation_id), 0, -1),
        )
        if not raw_events:
            return None
        tracker = self.init_tracker(conversation_id)
        _apply(tracker, raw_events)
        self._positions.remember(tracker, len(raw_events))
        return tracker

    async def keys(self) -> Iterable[str]:
        """Ids of all stored conversations, found by SCAN (never KEYS, which blocks Redis).

        Any id is listed, ``}`` and glob characters included (Rasa's REST channel and HTTP API
        take ids from the client): the id is the key minus the fixed prefix and suffix, and
        only lists count, because other kinds of conversation key can match the pattern too
        (the web chat's dedupe key of a message whose client-chosen id ends in ``}:events``)
        and none of them is a list. SCAN's TYPE filter needs Redis 6.0 or later.
        """
        client = self._client()
        pattern = self._events_key("*")
        prefix, suffix = self._events_key("\0").split("\0")

        async def scan() -> List[str]:
            found: Dict[str, None] = {}
            async for key in client.scan_iter(match=pattern, count=1000, _type="list"):
                found[key.decode()[len(prefix) : -len(suffix)]] = None
            return list(found)

        return await self._redis("list conversations", "*", scan())

    # -- history paging (web chat) -----------------------------------------------------------

    async def read_events(
        self, conversation_id: str, start: int = 0, stop: int = -1
    ) -> List[Dict[str, Any]]:
        """Events ``start``..``stop`` of the whole log, as Rasa event dicts.

        Indexes follow LRANGE: ``stop`` is inclusive, negative indexes count from the end.
        """
        raw_events = await self._redis(
            "read the log",
            conversation_id,
            self._client().lrange(self._events_key(conversation_id), start, stop),
        )
        return [json.loads(raw) for raw in raw_events]

    async def event_count(self, conversation_id: str) -> int:
        """Length of the conversation's event log (0 when there is none)."""
        return await self._redis(
            "read the log length",
            conversation_id,
            self._client().llen(self._events_key(conversation_id)),
        )

    # -- internals ---------------------------------------------------------------------------

    def _client(self) -> AnyRedis:
        return redis_client(self.redis)

    def _events_key(self, conversation_id: str) -> str:
        return conversation_key(conversation_id, "events", namespace=self.namespace)

    def _session_start_key(self, conversation_id: str) -> str:
        return conversation_key(conversation_id, "session_start", namespace=self.namespace)

    async def _redis(self, action: str, conversation_id: str, pending: Awaitable[_T]) -> _T:
        """Awaits a Redis call, turning any Redis failure into StateUnavailable."""
        try:
            return await pending
        except REDIS_FAILURES as error:
            reason = f"tracker store could not {action} of {_mask(conversation_id)}"
            logger.error("%s: %s: %s", reason, type(error).__name__, error)
            raise StateUnavailable(f"{reason} ({type(error).__name__})") from error

    async def _append(
        self, conversation_id: str, expected: int, pending: Sequence[_PendingEvent]
    ) -> tuple[bool, int]:
        session_starts = [i for i, event in enumerate(pending) if event.starts_session]
        live_prefix = json.dumps({"conversation_id": conversation_id})[:-1] + ", "
        appended, length = await self._redis(
            "append to the log",
            conversation_id,
            _APPEND(
                self._client(),
                keys=[
                    self._events_key(conversation_id),
                    self._session_start_key(conversation_id),
                    conversation_key(conversation_id, "forgotten"),
                ],
                args=[
                    expected,
                    self.inactivity_expiry,
                    conversation_key(conversation_id, "live"),
                    live_prefix,
                    session_starts[-1] if session_starts else -1,
                    *(event.raw for event in pending),
                ],
            ),
        )
        if int(appended) < 0:
            raise StateUnavailable(
                f"conversation {_mask(conversation_id)} was erased: nothing more is stored"
            )
        return bool(appended), int(length)

    async def _missing_from_log(
        self, tracker: DialogueStateTracker
    ) -> tuple[int, List[_PendingEvent]]:
        """Compares a tracker of unknown origin with the whole log, event by event.

        Needed only for trackers this store did not hand out (a brand-new conversation, a
        tracker rebuilt elsewhere) or after the log shrank; content equality of events
        (timestamps included) tells which are stored. A tracker rebuilt from the log can hold
        logged events as a replay changed them (see ``_replayed_forms``); when some logged
        event found no match, those forms are looked up too, or they would be appended again.
        """
        conversation_id = tracker.sender_id
        stored = await self._redis(
            "read the log",
            conversation_id,
            self._client().lrange(self._events_key(conversation_id), 0, -1),
        )
        pending = [_PendingEvent.of(event) for event in tracker.events if not _is_carried(event)]
        parsed = [json.loads(raw) for raw in stored]
        logged = [_canonical_form(parameters) for parameters in parsed]
        missing = _without(pending, logged)
        if len(pending) - len(missing) < len(logged):
            replayed = _replayed_forms(conversation_id, self.domain, parsed, logged)
            missing = _without(pending, logged, replayed)
        return len(stored), missing

    async def _last_session(self, conversation_id: str) -> Optional[_SessionCopy]:
        cached = self._sessions.get(conversation_id)
        length, session_start, start, raw_events = await self._read_last_session(
            conversation_id, cached
        )
        if cached is not None and start != session_start:
            # Only the tail was read: valid if the copy did not move while we awaited.
            if self._sessions.get(conversation_id) is cached and cached.log_length == start:
                _apply(cached.tracker, raw_events)
                cached.log_length = length
                if raw_events:
                    cached.last_raw_event = raw_events[-1]
                self._sessions.move_to_end(conversation_id)
                return cached
            length, session_start, start, raw_events = await self._read_last_session(
                conversation_id, None
            )
        if length == 0:
            self._sessions.pop(conversation_id, None)
            return None
        tracker = DialogueStateTracker(conversation_id, self.domain.slots)
        _apply(tracker, raw_events)
        session = _SessionCopy(
            tracker=tracker,
            log_length=length,
            session_start=session_start,
            last_raw_event=raw_events[-1] if raw_events else b"",
        )
        if self.cached_conversations:
            self._sessions[conversation_id] = session
            self._sessions.move_to_end(conversation_id)
            while len(self._sessions) > self.cached_conversations:
                self._sessions.popitem(last=False)
        return session

    async def _read_last_session(
        self, conversation_id: str, cached: Optional[_SessionCopy]
    ) -> tuple[int, int, int, List[bytes]]:
        known = (
            [cached.log_length, cached.session_start, cached.last_raw_event]
            if cached is not None
            else [0, 0, b""]
        )
        length, session_start, start, raw_events = await self._redis(
            "read the last session",
            conversation_id,
            _READ(
                self._client(),
                keys=[
                    self._events_key(conversation_id),
                    self._session_start_key(conversation_id),
                    conversation_key(conversation_id, "forgotten"),
                ],
                args=known,
            ),
        )
        return int(length), int(session_start), int(start), list(raw_events)

    def _hand_out(self, session: _SessionCopy) -> DialogueStateTracker:
        """A copy of the session's tracker whose events are its carried state + its window."""
        if self.window_turns:
            _advance_window(session, self.window_turns, self.domain)
        events: Iterable[Event] = session.tracker.events
        if session.window_start:
            events = itertools.chain(
                session.carried, itertools.islice(events, session.window_start, None)
            )
        tracker = _copy_tracker(session.tracker, self.max_event_history, events)
        self._positions.remember(tracker, session.log_length)
        return tracker

    def session_history(self, tracker: DialogueStateTracker) -> Optional[List[Event]]:
        """The whole session behind a windowed ``tracker`` (or a copy of one): the events
        before its window, from this process's copy of the session, then its own.

        None when ``tracker`` is not windowed, or its session is no longer cached here (the
        caller then has the window only). Costs time in proportion to the session, so Rasa
        asks for it only for actions that quote the conversation (``full_history_actions``).
        """
        events = tracker.events
        carried = 0
        while carried < len(events) and _is_carried(events[carried]):
            carried += 1
        session = self._sessions.get(tracker.sender_id)
        if not carried or carried == len(events) or session is None:
            return None
        first_in_window = events[carried]
        for index in range(session.window_start, -1, -1):
            if index < len(session.tracker.events) and (
                session.tracker.events[index] is first_in_window
            ):
                return list(itertools.islice(session.tracker.events, index)) + list(
                    itertools.islice(events, carried, None)
                )
        return None


def event_log_of(agent: Any, needed_by: str) -> Any:
    """The agent's event-log store, under the wrappers Rasa puts around the configured store
    (``FailSafeTrackerStore``, ``AwaitableTrackerStore`` keep it in ``_tracker_store``), for the
    paged reads that are ours, not in Rasa's interface (``read_events``, ``event_count``).
    ``needed_by`` names the part that needs them when the configured store lacks them."""
    store = getattr(agent, "tracker_store", None)
    while hasattr(store, "_tracker_store"):
        store = store._tracker_store
    if not hasattr(store, "read_events") or not hasattr(store, "event_count"):
        raise ConfigError(
            f"{needed_by} needs tracker_store type "
            "connectors.tracker_store.RedisEventLogTrackerStore in endpoints.yml"
        )
    return store


def install_loud_state_failures(agent: Any) -> None:
    """Makes the agent's tracker store raise StateUnavailable instead of failing silently.

    Rasa's Agent wraps every tracker store in FailSafeTrackerStore, which saves into an
    in-memory store nobody reads and answers reads with a fresh tracker when the real store
    fails: the customer would get a reply whose state was never saved. Its error callback runs
    inside its ``except`` block, before any fallback, so raising there stops it. Idempotent.
    Accepts an Agent (anything with ``tracker_store``) or a tracker store itself.
    """
    store = getattr(agent, "tracker_store", agent)
    if isinstance(store, FailSafeTrackerStore):
        store._on_tracker_store_error = _raise_state_unavailable
    elif not isinstance(store, TrackerStore):
        raise TypeError(f"expected a Rasa Agent or TrackerStore, got {type(agent).__name__}")


def _raise_state_unavailable(error: Exception) -> None:
    if isinstance(error, StateUnavailable):
        raise error
    raise StateUnavailable(f"tracker store failed ({type(error).__name__})") from error


def _events_after(
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


def _without(
    pending: List[_PendingEvent],
    stored: Sequence[str],
    replayed: Optional[Dict[str, str]] = None,
) -> List[_PendingEvent]:
    """``pending`` minus the events found in ``stored``, each stored event matching once.

    ``stored`` holds canonical forms (``_canonical``); ``replayed`` maps other forms of stored
    events to their stored form (see ``_replayed_forms``).
    """
    if not stored:
        return pending
    remaining = Counter(stored)
    missing = []
    for event in pending:
        key = _canonical(event.raw)
        if remaining[key] == 0 and replayed:
            key = replayed.get(key, key)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            missing.append(event)
    return missing


def _replayed_forms(
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
        event = _event_from(parameters)
        if event is not None:
            tracker.update(event)
            replayed_events.append((logged_form, event))
    replayed = {}
    for logged_form, event in replayed_events:
        # Read from JSON, the event holds only JSON values: no round trip needed to compare.
        replayed_form = _canonical_form(event.as_dict())
        if replayed_form != logged_form:
            replayed[replayed_form] = logged_form
    return replayed


def _canonical(raw: Union[bytes, str]) -> str:
    return _canonical_form(json.loads(raw))


def _canonical_form(value: Any) -> str:
    """One spelling per event content, whatever its key order, for comparing events."""
    return json.dumps(value, sort_keys=True)


def _apply(tracker: DialogueStateTracker, raw_events: Iterable[bytes]) -> None:
    for raw in raw_events:
        event = _event_from(json.loads(raw))
        if event is not None:
            tracker.update(event)


def _event_from(parameters: Dict[str, Any]) -> Optional[Event]:
    """What Event.from_parameters does, minus its search through every Event subclass for
    each event, which is most of the time a first read of a long session takes."""
    event_class = _event_class(parameters.get("event"))
    return event_class._from_parameters(parameters) if event_class else None


@functools.cache
def _event_class(type_name: Optional[str]) -> Optional[type[Event]]:
    return Event.resolve_by_type(type_name) if type_name else None


def _is_carried(event: Event) -> bool:
    return bool(event.metadata) and CARRIED in event.metadata


def _advance_window(session: _SessionCopy, window_turns: int, domain: Domain) -> None:
    """Moves the session's window to start ``window_turns`` user messages from its end.

    The state before the new start is rebuilt from the old carried state plus the events that
    leave the window (a replay of whole turns, so a revert inside one stays inside it); over
    a conversation each event is replayed once more, so the cost per turn stays flat.
    """
    events = session.tracker.events
    start = _window_start(events, window_turns)
    if start <= session.window_start:
        return
    leaving = list(itertools.islice(events, session.window_start, start))
    before = DialogueStateTracker.from_events(
        session.tracker.sender_id, session.carried + leaving, slots=domain.slots
    )
    session.carried = _carried_state(before, events[start].timestamp)
    session.window_start = start


def _window_start(events: Sequence[Event], window_turns: int) -> int:
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


def _carried_state(tracker: DialogueStateTracker, timestamp: float) -> List[Event]:
    """Events that rebuild ``tracker``'s state on an empty tracker, shaped like a session start
    (with the active form, if any, just run): the start of a session as Rasa would carry it
    over, so policies see the carried slots and form on the first state of the window."""
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
        if tracker.active_loop.is_interrupted:
            carried.append(LoopInterrupted(True, timestamp=timestamp, metadata=mark))
    requested = tracker.get_slot(REQUESTED_SLOT)
    if requested is not None:
        carried.append(SlotSet(REQUESTED_SLOT, requested, timestamp=timestamp, metadata=mark))
    return carried


def _copy_tracker(
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


def _non_negative_int(name: str, value: Union[int, str]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ConfigError(f"tracker_store: {name} must be a whole number >= 0, got {value!r}")
    return number


def _mask(conversation_id: str) -> str:
    """Conversation ids are opaque, but a stock channel may use a phone number as sender id."""
    if len(conversation_id) <= 6:
        return conversation_id
    return conversation_id[:4] + "…" + conversation_id[-2:]
