"""Feeds the insight figures as events are stored, off the customer's path.

The tracker store calls :func:`events_appended` with the events each save appended (once per
event, fleet-wide). The figures are worked out there and then (pure, cheap) and written by a
background task, so a turn never waits for them; a Redis failure loses those figures only, and
says so in the log. :func:`turn_clock` marks when a turn was handed to Rasa, so the save at its
end knows the turn's reply time.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar
from typing import Any, Dict, Mapping, Optional, Sequence

from omnichannel.errors import ConfigError
from omnichannel.insight.facts import figures_of, parsed
from omnichannel.insight.store import DEFAULT_RETENTION_DAYS, InsightStore
from omnichannel.redis_client import REDIS_FAILURES, redis_client
from omnichannel.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

_turn_started: ContextVar[Optional[float]] = ContextVar("insight_turn_started", default=None)
_tasks = BackgroundTasks("insight figures", in_flight=False)


def retention_days(env: Optional[Mapping[str, str]] = None) -> int:
    """``INSIGHT_RETENTION_DAYS``: how long each day's figures are kept (default 90)."""
    raw = ((os.environ if env is None else env).get("INSIGHT_RETENTION_DAYS") or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    if not raw.isdigit() or not 1 <= int(raw) <= 3660:
        raise ConfigError(f"INSIGHT_RETENTION_DAYS must be a number of days (1-3660), got {raw!r}")
    return int(raw)


def turn_clock() -> object:
    """Marks the start of a turn in this task; returns the token for :func:`turn_clock_reset`."""
    return _turn_started.set(time.perf_counter())


def turn_clock_reset(token: object) -> None:
    _turn_started.reset(token)  # type: ignore[arg-type]


def events_appended(
    redis: Any, conversation_id: str, raw: Sequence[str], namespace: str = ""
) -> None:
    """Counts the events a save appended to ``conversation_id``'s log (JSON as stored), under
    the store's ``namespace``."""
    events = parsed(raw)
    reply = None
    started = _turn_started.get()
    if started is not None and any(event.get("event") == "user" for event in events):
        # The save that stores the customer's message ends the turn (a first message's session
        # start is saved on its own before it): its time is the turn's reply time.
        reply = time.perf_counter() - started
        _turn_started.set(None)
    try:
        _tasks.start(_record(redis, conversation_id, events, reply, namespace), "insight figures")
    except RuntimeError:  # no running loop (a synchronous caller): nothing to count with
        return


async def _record(
    redis: Any,
    conversation_id: str,
    events: Sequence[Dict[str, Any]],
    reply: Optional[float],
    namespace: str,
) -> None:
    store = InsightStore(redis_client(redis), retention_days(), namespace)
    try:
        figures = figures_of(events, reply_seconds=reply)
        if figures.empty and figures.last_intent is None:
            return
        channel = next((channel for (_, channel) in figures.active), None)
        intent, previous_channel = await store.remember(conversation_id, figures, channel)
        if intent or previous_channel:
            # Again, knowing the conversation's last message before this batch.
            figures = figures_of(
                events,
                previous_intent=intent,
                previous_channel=previous_channel,
                reply_seconds=reply,
            )
        await store.record(conversation_id, figures)
    except REDIS_FAILURES as error:
        logger.warning("insight figures of a save not recorded: %s", type(error).__name__)
