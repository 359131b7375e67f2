"""Booking a callback: the one path the customer's "call me back", the hand-off's offer and an
agent's request all take.

The call may only go to the conversation's own number (the contact profile's), so a
conversation without one cannot book. The outbound gate is asked first, so a number that
opted out (STOP) is refused now rather than promised a call; a hold (the global rate limit,
quiet hours for a callback the customer did not ask for) moves the due time. A conversation has
one callback waiting: booking again moves it. The gate decides again when the call is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omnichannel.callbacks.items import BY_CUSTOMER, callback_item, scheduled_callback
from omnichannel.channels import VOICE
from omnichannel.identity import IdentityStore
from omnichannel.outbound.gate import OutboundRequest
from omnichannel.outbound.items import SCHEDULED, OutboundItem, OutboundQueue
from omnichannel.outbound.policy import CALLBACK, HOLD, REFUSE

BOOKED = "booked"
MOVED = "moved"
NO_NUMBER = "no_number"
REFUSED = "refused"


@dataclass(frozen=True)
class Booking:
    """What booking did: ``result`` (booked, moved, no_number, refused), the callback's item
    and when it is due (booked, moved), or the gate's ``reason`` (refused)."""

    result: str
    item: Optional[OutboundItem] = None
    due: Optional[float] = None
    reason: Optional[str] = None


async def book_callback(
    queue: OutboundQueue,
    conversation_id: str,
    due: float,
    *,
    opening: str,
    topic: str = "",
    requested_on: str = "",
    source: str = BY_CUSTOMER,
    identity: Optional[IdentityStore] = None,
) -> Booking:
    """Books (or moves) the conversation's callback for ``due``. Raises Redis failures."""
    profile = await (identity or IdentityStore()).profile(conversation_id)
    if not profile.phone:
        return Booking(NO_NUMBER)
    decision = await queue.gate.decide(
        OutboundRequest(conversation_id, CALLBACK, VOICE, customer_requested=source == BY_CUSTOMER)
    )
    if decision.verdict == REFUSE:
        return Booking(REFUSED, reason=decision.reason)
    if decision.verdict == HOLD and decision.not_before is not None:
        due = max(due, decision.not_before.timestamp())
    existing = await scheduled_callback(queue.store, conversation_id)
    if existing is not None:
        # Its time and what it is about now (the order may have come up since).
        payload = {**existing.payload, "opening": opening, "topic": topic}
        moved = await queue.store.transition(
            conversation_id,
            existing.item_id,
            (SCHEDULED,),
            now=queue.clock(),
            status=SCHEDULED,
            due=due,
            payload=payload,
        )
        if moved:
            return Booking(MOVED, existing, due)
    item = callback_item(
        conversation_id,
        due,
        opening=opening,
        topic=topic,
        requested_on=requested_on,
        source=source,
    )
    # Recorded only: the Rasa server's queue, which holds the VAPI courier, places it.
    await queue.submit(item, send_now=False)
    return Booking(BOOKED, item, due)
