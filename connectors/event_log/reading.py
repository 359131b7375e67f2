"""Reading a conversation's event log page by page, as the web chat's history and the viewer's
timeline do: the store under Rasa's wrappers (:func:`event_log_of`), and the channel each bot
event answered (the channel of the user turn before it: :func:`next_turn_channel`, looked for at
most ``CHANNEL_LOOKBACK_EVENTS`` back from a page's start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from omnichannel.channels import kind_of_event
from omnichannel.errors import ConfigError

if TYPE_CHECKING:
    from rasa.core.agent import Agent

#: The slot the VAPI connector stores each call's end-of-call report in (summary included).
CALL_REPORT_SLOT = "last_call"
#: How far back a page looks for the turn its first bot messages answered (their channel).
CHANNEL_LOOKBACK_EVENTS = 500

Event = Dict[str, Any]


def event_log_of(agent: Agent, needed_by: str) -> Any:
    """The agent's event-log store, under the wrappers Rasa puts around the configured store
    (``FailSafeTrackerStore``, ``AwaitableTrackerStore`` keep it in ``_tracker_store``), for the
    paged reads that are ours, not in Rasa's interface (``read_events``, ``event_count``).
    ``needed_by`` names the part that needs them when the configured store lacks them."""
    store: Any = getattr(agent, "tracker_store", None)
    while hasattr(store, "_tracker_store"):
        store = store._tracker_store
    if not hasattr(store, "read_events") or not hasattr(store, "event_count"):
        raise ConfigError(
            f"{needed_by} needs tracker_store type "
            "connectors.tracker_store.RedisEventLogTrackerStore in endpoints.yml"
        )
    return store


def next_turn_channel(event: Event, turn_channel: Optional[str]) -> Optional[str]:
    """The channel later bot events answer after ``event``: a user event's, when it has one."""
    if event.get("event") == "user":
        return kind_of_event(event) or turn_channel
    return turn_channel
