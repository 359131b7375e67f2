"""Finding the conversation a query names and reading one page of its timeline from Redis.

The identity store maps a phone number or a site user to its conversation; the tracker store's
event log (:class:`connectors.tracker_store.RedisEventLogTrackerStore`) holds every event of it,
whatever the channel; the outbound store (:mod:`omnichannel.outbound.items`) its notifications
and callbacks (scheduled, queued, sent, refused, with the reason). Each page costs two bounded
reads: the page's events, and up to
``CHANNEL_LOOKBACK_EVENTS`` before them to learn which channel the page's first bot messages
answered on. Redis failures surface as :class:`~omnichannel.redis_client.StateUnavailable`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from connectors.event_log.reading import CHANNEL_LOOKBACK_EVENTS
from connectors.viewer.timeline import Masker, build_timeline
from connectors.viewer.wire import Query
from omnichannel.callbacks.items import call_fields, callback_entry
from omnichannel.channels import kind_of_event
from omnichannel.identity import IdentityStore
from omnichannel.outbound.items import OutboundItem, OutboundStore
from omnichannel.outbound.policy import CALLBACK
from omnichannel.receipts import Receipts
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.refunds import RefundRequests


class NotFound(LookupError):
    """No conversation matches; the message is safe to return in a 404."""


async def find_conversation(identity: IdentityStore, store: Any, query: Query) -> str:
    """The id of the conversation ``query`` names, which must have a stored event."""
    if query.address is not None:
        conversation_id = await identity.lookup(query.address)
        if conversation_id is None:
            what = "phone number" if query.address.scheme == "tel" else "user id"
            raise NotFound(f"no conversation for that {what}")
    else:
        conversation_id = query.conversation_id or ""
    if not await store.event_count(conversation_id):
        raise NotFound("that conversation has no stored events")
    return conversation_id


async def _channel_before(store: Any, conversation_id: str, index: int) -> Optional[str]:
    """The channel of the last user turn before event ``index``, looking back a bounded way."""
    if index <= 0:
        return None
    start = max(0, index - CHANNEL_LOOKBACK_EVENTS)
    for event in reversed(await store.read_events(conversation_id, start, index - 1)):
        if event.get("event") == "user":
            return kind_of_event(event)
    return None


async def timeline_page(identity: IdentityStore, store: Any, query: Query) -> Dict[str, Any]:
    """The JSON answer of ``POST /api/timeline``: the conversation, its contact profile and the
    entries of up to ``query.limit`` events before ``query.before`` (oldest first), with the
    cursor of the next older page (``older_before``, None at the start of the log)."""
    conversation_id = await find_conversation(identity, store, query)
    total = await store.event_count(conversation_id)
    stop = total if query.before is None else min(query.before, total)
    start = max(0, stop - query.limit)
    events = await store.read_events(conversation_id, start, stop - 1) if stop > start else []
    masker = Masker(query.searched_phone)
    try:
        receipts = await Receipts(identity.redis).all(conversation_id)
        refunds = await RefundRequests(identity.redis).all(conversation_id)
        outbound_store = OutboundStore()
        outbound = [
            await outbound_entry_of(outbound_store, item)
            for item in await outbound_store.of_conversation(conversation_id)
        ]
    except REDIS_FAILURES as error:
        raise StateUnavailable(f"receipts unreadable ({type(error).__name__})") from error
    entries = build_timeline(
        list(enumerate(events, start)),
        await _channel_before(store, conversation_id, start),
        masker,
        receipts,
    )
    profile = await identity.profile(conversation_id)
    return {
        "conversation_id": conversation_id,
        "profile": {
            "phone": masker(profile.phone) if profile.phone else None,
            "user_id": profile.user_id,
            "channels_seen": profile.channels,
            "sms_opted_out": profile.sms_opted_out,
            "refund_requests": [
                {
                    "order": request.get("order"),
                    "started_at": request.get("started_at"),
                    "photos": len(request.get("photos") or []),
                }
                for request in refunds
            ],
        },
        "total_events": total,
        "page": {"start": start, "stop": stop},
        "older_before": start if start > 0 else None,
        "entries": entries,
        "outbound": outbound,
    }


def outbound_entry(item: OutboundItem, call: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """A business-initiated item as the viewer lists it: what, its status and why, when. A
    callback (``call``: its call's progress) says what it is about, its call's id and how the
    call went (placed, answered, completed, or why it failed)."""
    if item.kind == CALLBACK:
        entry = callback_entry(item, call or {})
        topic = entry.pop("topic")
        return {
            **entry,
            "response": "call back" + (f" about order {topic}" if topic else ""),
            "slots": {},
        }
    return {
        **item.as_dict(),
        "response": item.payload.get("response"),
        "slots": item.payload.get("slots") or {},
    }


async def outbound_entry_of(store: OutboundStore, item: OutboundItem) -> Dict[str, Any]:
    """:func:`outbound_entry`, with a callback's call progress read from the store."""
    if item.kind == CALLBACK:
        return outbound_entry(item, await call_fields(store, item))
    return outbound_entry(item)


async def recent_outbound(status: Optional[str], limit: int) -> Dict[str, Any]:
    """The JSON answer of ``POST /api/outbound``: every conversation's notifications and
    callbacks, most recently changed first (``status`` only, when given), and the latest
    refusals that named no known customer."""
    store = OutboundStore()
    try:
        items = await store.recent(limit if status is None else limit * 5)
        refusals = await store.refusals(limit)
        wanted = [item for item in items if status is None or item.status == status][:limit]
        entries = [await outbound_entry_of(store, item) for item in wanted]
    except REDIS_FAILURES as error:
        raise StateUnavailable(f"outbound items unreadable ({type(error).__name__})") from error
    return {"items": entries, "refusals": refusals}
