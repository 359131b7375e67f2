"""An agent's callback request from the inbox: the assistant calls the customer back.

The agent writes when ("now", "tomorrow at 10am", "in 2 hours": the customers' grammar,
:mod:`omnichannel.callbacks.times`), or nothing for as soon as possible; words that name no
time are refused rather than read as "now". The booking is the
customers' own path (:func:`~omnichannel.callbacks.booking.book_callback`, ``source`` agent):
the call goes only to the conversation's own number, inside the support team's hours, and the
outbound gate decides (an opted-out number is refused now; quiet hours hold a call the customer
did not ask for). The call's first words are ``utter_callback_opening_agent`` from domain.yml:
the assistant places the call, so they promise no person.

The answer says what happened, for the agent to read: ``booked`` with the time, or ``refused``
with why (no number, opted out, a time that cannot be, calls not set up).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from omnichannel.callbacks.booking import MOVED, NO_NUMBER, REFUSED, book_callback
from omnichannel.callbacks.items import BY_AGENT
from omnichannel.callbacks.times import (
    CallbackTime,
    Unclear,
    due_time,
    requested_time,
    says_now,
)
from omnichannel.handoff.hours import BusinessHours
from omnichannel.identity import IdentityStore
from omnichannel.outbound.items import OutboundQueue

OPENING = "utter_callback_opening_agent"
#: Why a callback was not booked, as the agent reads it.
REFUSALS = {
    NO_NUMBER: "the conversation has no phone number of its own to call",
    "opted_out": "the customer's number opted out (STOP)",
    "no_consent": "no consent on record for calls to this number",
    "no_address": "the conversation has no phone number of its own to call",
    "customer_rate_limit": "the customer was already contacted too often today",
    "unclear": 'that time could not be read; try "now", "in 2 hours" or "tomorrow at 10am"',
    "passed": "that time has passed",
    "too_far": "callbacks can be booked up to two weeks ahead",
    "closed": "the support team is closed then, with no opening within two weeks",
    "not_set_up": (
        "callbacks are not set up (VAPI_API_KEY, VAPI_PHONE_NUMBER_ID) or HANDOFF_HOURS is invalid"
    ),
}


def opening_of(responses: Mapping[str, Any]) -> str:
    """The call's first words: ``utter_callback_opening_agent`` (its ``channel: vapi``
    variation if there is one)."""
    variations = [v for v in responses.get(OPENING) or [] if not v.get("condition")]
    chosen = next((v for v in variations if v.get("channel") == "vapi"), None) or next(
        (v for v in variations if not v.get("channel")), None
    )
    return str((chosen or {}).get("text") or "")


def refused(reason: str) -> Dict[str, Any]:
    return {"result": "refused", "reason": reason, "why": REFUSALS.get(reason, reason)}


async def request_callback(
    queue: OutboundQueue,
    hours: BusinessHours,
    conversation_id: str,
    when: str,
    opening: str,
    identity: Optional[IdentityStore] = None,
) -> Dict[str, Any]:
    """Books (or moves) the conversation's callback for ``when``; the answer for the agent.
    Raises Redis failures."""
    asked = requested_time(when)
    # A customer's message without a time means now; an agent's words must say when (a typo
    # is not a call placed this minute), so only empty or "now" words mean now.
    if isinstance(asked, Unclear) or (asked.asap and when.strip() and not says_now(when)):
        return refused("unclear")
    now = queue.clock()
    due = due_time(asked, now, hours)
    if not isinstance(due, CallbackTime):
        return refused(due.reason)
    booking = await book_callback(
        queue,
        conversation_id,
        due.due,
        opening=opening,
        source=BY_AGENT,
        identity=identity,
    )
    if booking.result in (NO_NUMBER, REFUSED):
        return refused(booking.reason or booking.result)
    at = float(booking.due or due.due)
    return {
        "result": "moved" if booking.result == MOVED else "booked",
        "item_id": booking.item.item_id if booking.item else None,
        "due": at,
        "when": "now" if at <= now + 60 else hours.describe(at, now),
    }
