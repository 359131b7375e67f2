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

import itertools
import json
import logging
import os
from typing import Any, Awaitable, Dict, Iterable, List, Optional, Sequence, TypeVar, Union

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    Event,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors import rasa_patches as patches
from connectors.event_log.cache import LogPositions, SessionCache, SessionCopy
from connectors.event_log.events import (
    PendingEvent,
    apply_events,
    canonical,
    canonical_form,
    events_after,
    replayed_forms,
    without,
)
from connectors.event_log.window import advance_window, copy_tracker, is_carried
from omnichannel.errors import ConfigError
from omnichannel.insight import recorder as insight
from omnichannel.masking import mask_conversation_id
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
        self._sessions = SessionCache(self.cached_conversations)
        self._positions = LogPositions()
        super().__init__(domain, event_broker)

    @property
    def domain(self) -> Domain:
        return self._domain

    @domain.setter
    def domain(self, domain: Optional[Domain]) -> None:
        # Cached replays carry the old domain's slots; a new model must not see them.
        self._domain = domain or Domain.empty()
        self._sessions = SessionCache(self.cached_conversations)

    # -- Rasa's TrackerStore interface -------------------------------------------------------

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Appends the tracker's events that the log does not hold yet.

        Raises StateUnavailable when Redis fails; then nothing of this save is stored.
        """
        await self.stream_events(tracker)
        conversation_id = tracker.sender_id
        position = self._positions.get(tracker)
        new_events = events_after(tracker, position.last_event) if position else None
        if position is None or new_events is None:
            expected, pending = await self._missing_from_log(tracker)
        else:
            expected, pending = position.log_length, [PendingEvent.of(e) for e in new_events]

        for _ in range(MAX_APPEND_ATTEMPTS):
            appended, length = await self._append(conversation_id, expected, pending)
            if appended:
                self._positions.remember(tracker, length)
                # Exactly what this save added, once fleet-wide: the insight page's figures.
                insight.events_appended(
                    self.redis, conversation_id, [e.raw for e in pending], self.namespace
                )
                return
            if length > expected:
                # Someone appended since we last looked: keep only what they did not write.
                written_meanwhile = await self._redis(
                    "read the log",
                    conversation_id,
                    self._client().lrange(self._events_key(conversation_id), expected, length - 1),
                )
                pending = without(pending, [canonical(raw) for raw in written_meanwhile])
                expected = expected + len(written_meanwhile)
            else:
                # The log is shorter than this tracker saw (expired, or lost in a crash).
                expected, pending = await self._missing_from_log(tracker)
        raise StateUnavailable(
            f"tracker store: the log of {mask_conversation_id(conversation_id)} kept changing "
            "during a save"
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
        apply_events(tracker, raw_events)
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
            reason = f"tracker store could not {action} of {mask_conversation_id(conversation_id)}"
            logger.error("%s: %s: %s", reason, type(error).__name__, error)
            raise StateUnavailable(f"{reason} ({type(error).__name__})") from error

    async def _append(
        self, conversation_id: str, expected: int, pending: Sequence[PendingEvent]
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
                f"conversation {mask_conversation_id(conversation_id)} was erased: "
                "nothing more is stored"
            )
        return bool(appended), int(length)

    async def _missing_from_log(
        self, tracker: DialogueStateTracker
    ) -> tuple[int, List[PendingEvent]]:
        """Compares a tracker of unknown origin with the whole log, event by event.

        Needed only for trackers this store did not hand out (a brand-new conversation, a
        tracker rebuilt elsewhere) or after the log shrank; content equality of events
        (timestamps included) tells which are stored. A tracker rebuilt from the log can hold
        logged events as a replay changed them (see ``replayed_forms``); when some logged
        event found no match, those forms are looked up too, or they would be appended again.
        """
        conversation_id = tracker.sender_id
        stored = await self._redis(
            "read the log",
            conversation_id,
            self._client().lrange(self._events_key(conversation_id), 0, -1),
        )
        pending = [PendingEvent.of(event) for event in tracker.events if not is_carried(event)]
        parsed = [json.loads(raw) for raw in stored]
        logged = [canonical_form(parameters) for parameters in parsed]
        missing = without(pending, logged)
        if len(pending) - len(missing) < len(logged):
            replayed = replayed_forms(conversation_id, self.domain, parsed, logged)
            missing = without(pending, logged, replayed)
        return len(stored), missing

    async def _last_session(self, conversation_id: str) -> Optional[SessionCopy]:
        cached = self._sessions.get(conversation_id)
        length, session_start, start, raw_events = await self._read_last_session(
            conversation_id, cached
        )
        if cached is not None and start != session_start:
            # Only the tail was read: valid if the copy did not move while we awaited.
            if self._sessions.get(conversation_id) is cached and cached.log_length == start:
                apply_events(cached.tracker, raw_events)
                cached.log_length = length
                if raw_events:
                    cached.last_raw_event = raw_events[-1]
                self._sessions.touch(conversation_id)
                return cached
            length, session_start, start, raw_events = await self._read_last_session(
                conversation_id, None
            )
        if length == 0:
            self._sessions.drop(conversation_id)
            return None
        tracker = DialogueStateTracker(conversation_id, self.domain.slots)
        apply_events(tracker, raw_events)
        session = SessionCopy(
            tracker=tracker,
            log_length=length,
            session_start=session_start,
            last_raw_event=raw_events[-1] if raw_events else b"",
        )
        self._sessions.put(conversation_id, session)
        return session

    async def _read_last_session(
        self, conversation_id: str, cached: Optional[SessionCopy]
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

    def _hand_out(self, session: SessionCopy) -> DialogueStateTracker:
        """A copy of the session's tracker whose events are its carried state + its window."""
        if self.window_turns:
            advance_window(session, self.window_turns, self.domain)
        events: Iterable[Event] = session.tracker.events
        if session.window_start:
            events = itertools.chain(
                session.carried, itertools.islice(events, session.window_start, None)
            )
        tracker = copy_tracker(session.tracker, self.max_event_history, events)
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
        while carried < len(events) and is_carried(events[carried]):
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


def _non_negative_int(name: str, value: Union[int, str]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ConfigError(f"tracker_store: {name} must be a whole number >= 0, got {value!r}")
    return number


