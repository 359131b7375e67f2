"""What agents' pages show, read from Redis: the queue (each open hand-off with the customer's
last words) and one conversation (its hand-off, its whole cross-channel timeline as the viewer
builds it, the team's notes, where a reply can go, and how each reply went).

Phone numbers in what is shown are masked (:class:`~connectors.viewer.timeline.Masker`), as in
the viewer: agents answer through the channels, they never need the number itself.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from connectors.handoff.engine import HandoffEngine
from connectors.viewer.lookup import NotFound, timeline_page
from connectors.viewer.timeline import Masker
from connectors.viewer.wire import Query
from omnichannel.channels import kind_of_event
from omnichannel.handoff.state import Handoff
from omnichannel.identity import IdentityStore

#: How far back the customer's last words are looked for.
LAST_WORDS_LOOKBACK = 100
LAST_WORDS_CHARS = 280


async def last_words(log: Any, conversation_id: str) -> Dict[str, Any]:
    """The customer's latest message: its text (masked, shortened), channel and time."""
    for event in reversed(await log.read_events(conversation_id, -LAST_WORDS_LOOKBACK, -1)):
        if event.get("event") == "user" and event.get("text"):
            text = Masker()(str((event.get("metadata") or {}).get("button_title") or event["text"]))
            if len(text) > LAST_WORDS_CHARS:
                text = text[: LAST_WORDS_CHARS - 1] + "…"
            return {"text": text, "channel": kind_of_event(event), "at": event.get("timestamp")}
    return {"text": None, "channel": None, "at": None}


async def queue_item(log: Any, handoff: Handoff) -> Dict[str, Any]:
    return {**handoff.as_dict(), "last_words": await last_words(log, handoff.conversation_id)}


async def queue(engine: HandoffEngine, log: Any, limit: int) -> Dict[str, Any]:
    """Open hand-offs: waiting ones oldest first, then claimed ones."""
    handoffs = await engine.store.open_handoffs(limit)
    return {
        "now": time.time(),
        "handoffs": [await queue_item(log, handoff) for handoff in handoffs],
    }


async def conversation(
    engine: HandoffEngine,
    identity: IdentityStore,
    log: Any,
    conversation_id: str,
    before: Optional[int],
    page_events: int,
) -> Dict[str, Any]:
    """One handed-off conversation (NotFound when it has no hand-off, open or recent)."""
    handoff = await engine.store.get(conversation_id)
    if handoff is None:
        raise NotFound("no hand-off for that conversation")
    page = await timeline_page(
        identity,
        log,
        Query(address=None, conversation_id=conversation_id, before=before, limit=page_events),
    )
    message_ids: List[str] = [
        entry["message_id"] for entry in page["entries"] if entry.get("message_id")
    ]
    found = await engine.reach(conversation_id)
    return {
        "now": time.time(),
        "handoff": handoff.as_dict(),
        "timeline": page,
        "notes": await engine.store.notes(conversation_id),
        "reach": {
            "available": list(found.available),
            "unavailable": found.unavailable,
            "default": found.default,
        },
        "statuses": await engine.messages.statuses(conversation_id, message_ids),
    }
