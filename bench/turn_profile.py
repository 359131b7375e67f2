"""Where a turn's time goes inside the Rasa server: a bench-only channel that times its parts.

``make bench`` adds ``bench.turn_profile.TurnProfileInput`` to a benchmark stack's
credentials.yml; production never loads it. ``POST /webhooks/turn_profile/start`` wraps Rasa's
and our methods with timers (at that moment, so they wrap whatever the tracker store's patches
installed at start-up); ``GET /webhooks/turn_profile/turns`` returns one record per
turn since the last call: milliseconds per part, summed over the turn (parts nest: a graph
node's time is also in the NLU or policy graph that ran it).

Parts: the lock plus the turn (when the channel goes through ``Agent.handle_message``), the
processor's turn, the session check, NLU, the slot extraction (turn context), the policy graph
and each of its nodes (featurisers, each policy's prediction, the ensemble), each action run
(local or remote), for remote actions the payload, the whole call and the reply validation, and
the store's retrieve and save. What the client measures beyond the turn is the connector's own
time (auth, dedupe, rendering, the socket or SSE stream).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from typing import Any, Awaitable, Callable, Dict, List, Optional

from rasa.core.actions.action import ActionExtractSlots, RemoteAction
from rasa.core.agent import Agent
from rasa.core.channels.channel import InputChannel
from rasa.core.processor import MessageProcessor
from rasa.engine.graph import GraphNode
from sanic import Blueprint, response
from sanic.request import Request

from bench.figures import CPU_PART
from connectors.tracker_store import RedisEventLogTrackerStore


class _Turns:
    """The records of finished turns, and the one running (turns run one at a time here)."""

    current: Optional[Dict[str, float]] = None
    finished: List[Dict[str, float]] = []
    installed = False


def _add(part: str, seconds: float) -> None:
    if _Turns.current is not None:
        _Turns.current[part] += seconds * 1000


def _timed(owner: type, method: str, part: Callable[[Any, Dict[str, Any]], str]) -> None:
    """Wraps ``owner.method``; ``part(self, arguments by name)`` names what it is timed as."""
    original = getattr(owner, method)
    signature = inspect.signature(original)

    def name_of(self: Any, args: tuple, kwargs: Dict[str, Any]) -> str:
        return part(self, signature.bind(self, *args, **kwargs).arguments)

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(self, *args, **kwargs)
            finally:
                _add(name_of(self, args, kwargs), time.perf_counter() - started)

        setattr(owner, method, timed_async)
    else:

        @functools.wraps(original)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                _add(name_of(self, args, kwargs), time.perf_counter() - started)

        setattr(owner, method, timed)


def _named(name: str) -> Callable[[Any, Dict[str, Any]], str]:
    return lambda _self, _arguments: name


def _recorded(owner: type, method: str, part: str) -> None:
    """Wraps a turn's entry point: the outermost one entered starts and ends the record."""
    original = getattr(owner, method)

    @functools.wraps(original)
    async def entry(self: Any, message: Any) -> Any:
        outermost = _Turns.current is None
        if outermost:
            _Turns.current = defaultdict(float)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return await original(self, message)
        finally:
            _add(part, time.perf_counter() - started)
            if outermost and _Turns.current is not None:
                # CPU the process spent meanwhile (this turn's, when turns run one at a time).
                _add(CPU_PART, time.process_time() - cpu_started)
                _Turns.finished.append(dict(_Turns.current))
                _Turns.current = None

    setattr(owner, method, entry)


def install() -> None:
    """Wraps the timed parts (once per process)."""
    if _Turns.installed:
        return
    _Turns.installed = True
    _recorded(Agent, "handle_message", "lock + turn (agent)")
    _recorded(MessageProcessor, "handle_message", "turn (processor)")
    _timed(GraphNode, "__call__", lambda node, _a: f"graph node {node._node_name}")
    _timed(MessageProcessor, "parse_message", _named("NLU"))
    _timed(MessageProcessor, "_update_tracker_session", _named("session check"))
    _timed(MessageProcessor, "_predict_next_with_tracker", _named("policies (graph)"))
    _timed(ActionExtractSlots, "run", _named("slot extraction (turn context)"))
    _timed(MessageProcessor, "_run_action", lambda _s, a: f"run {a['action'].name()}")
    _timed(RemoteAction, "_action_call_format", _named("remote: payload"))
    _timed(RemoteAction, "_validate_action_result", _named("remote: reply validation"))
    _timed(RemoteAction, "run", lambda s, _a: f"remote: {s.name()} (all)")
    _timed(RedisEventLogTrackerStore, "retrieve", _named("store retrieve"))
    _timed(RedisEventLogTrackerStore, "save", _named("store save"))


class TurnProfileInput(InputChannel):
    """Routes of the bench's turn profile (no messages come in through it)."""

    @classmethod
    def name(cls) -> str:
        return "turn_profile"

    def blueprint(self, on_new_message: Callable[[Any], Awaitable[Any]]) -> Blueprint:
        profile = Blueprint("turn_profile", __name__)

        @profile.route("/start", methods=["POST"])
        async def start(_: Request) -> Any:
            install()
            _Turns.finished.clear()
            return response.json({"installed": True})

        @profile.route("/turns", methods=["GET"])
        async def turns(_: Request) -> Any:
            finished = list(_Turns.finished)
            _Turns.finished.clear()
            return response.json(finished)

        return profile
