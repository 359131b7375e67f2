"""A callback as an outbound item: what it carries, and finding a conversation's callbacks.

A callback is an :class:`~omnichannel.outbound.items.OutboundItem` of kind ``callback``, so it
goes through the one outbound path (the gate's consent, quiet hours and rate limits; durable,
exactly-once sending at its due time; the viewer's lists). Its ``payload``:

- ``opening``: the call's first words, written from domain.yml when it was requested ("You
  asked us to call about order 40213…"), so the call continues the conversation;
- ``topic``: the order number it is about ('' when none);
- ``requested_on``: the channel kind it was asked for on.

``source`` is who asked (``customer``, ``agent``, or ``handoff`` when the hand-off offered it);
``customer_requested`` is true when the customer asked (quiet hours then do not hold it: they
chose the time). The call goes to the conversation's own number (the contact profile's), never
to a number typed in a message, so a customer cannot have someone else called.

After the call is placed the item is ``sent`` with ``outcome.call_id``; the call's end moves a
call nobody took to ``failed`` (reason: VAPI's ``endedReason``) and records in extra fields of
the item whether it was answered (:data:`ANSWERED_FIELD`) and how it ended
(:data:`ENDED_REASON_FIELD`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from omnichannel.outbound.items import SCHEDULED, OutboundItem, OutboundStore, new_item_id
from omnichannel.outbound.policy import CALLBACK

#: Who asked for a callback (the item's ``source``).
BY_CUSTOMER = "customer"
BY_AGENT = "agent"
BY_HANDOFF = "handoff"

#: Extra fields of a callback's item, written as its call goes.
ANSWERED_FIELD = "call_answered"
ENDED_REASON_FIELD = "call_ended_reason"
#: The call's outcome as the viewer shows it.
CALL_PLACED = "placed"
CALL_ANSWERED = "answered"
CALL_COMPLETED = "completed"


def callback_item(
    conversation_id: str,
    due: float,
    *,
    opening: str,
    topic: str = "",
    requested_on: str = "",
    source: str = BY_CUSTOMER,
) -> OutboundItem:
    """A new callback item due at ``due`` (epoch seconds)."""
    return OutboundItem(
        item_id=new_item_id(),
        kind=CALLBACK,
        conversation_id=conversation_id,
        due=due,
        source=source,
        customer_requested=source == BY_CUSTOMER,
        payload={"opening": opening, "topic": topic, "requested_on": requested_on},
    )


async def callbacks_of(store: OutboundStore, conversation_id: str) -> List[OutboundItem]:
    """The conversation's callbacks, newest first."""
    return [i for i in await store.of_conversation(conversation_id) if i.kind == CALLBACK]


async def scheduled_callback(store: OutboundStore, conversation_id: str) -> Optional[OutboundItem]:
    """The conversation's callback still waiting for its time, if any (the newest)."""
    for item in await callbacks_of(store, conversation_id):
        if item.status == SCHEDULED:
            return item
    return None


async def call_fields(store: OutboundStore, item: OutboundItem) -> Dict[str, str]:
    """The extra fields the call's progress wrote on the item."""
    raw = await store.redis.hmget(
        store.item_key(item.conversation_id, item.item_id), ANSWERED_FIELD, ENDED_REASON_FIELD
    )
    values = [v.decode("utf-8") if isinstance(v, bytes) else (v or "") for v in raw]
    return {ANSWERED_FIELD: values[0], ENDED_REASON_FIELD: values[1]}


def callback_entry(item: OutboundItem, call: Dict[str, str]) -> Dict[str, Any]:
    """A callback as the viewer lists it: the item, the call's id and how the call went."""
    entry = item.as_dict()
    entry["topic"] = str(item.payload.get("topic") or "")
    entry["call_id"] = str(item.outcome.get("call_id") or "")
    entry["call"] = None
    if entry["call_id"]:
        if call.get(ENDED_REASON_FIELD):
            entry["call"] = CALL_COMPLETED if call.get(ANSWERED_FIELD) else item.reason
        else:
            entry["call"] = CALL_ANSWERED if call.get(ANSWERED_FIELD) else CALL_PLACED
    entry["ended_reason"] = call.get(ENDED_REASON_FIELD) or None
    return entry
