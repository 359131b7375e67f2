"""The notification request as the shop's backend sends it, and the answer it gets. No Sanic,
no Rasa.

::

    POST /webhooks/notifications/send
    Authorization: Bearer <NOTIFICATIONS_API_KEY>
    Idempotency-Key: order-40213-shipped
    {"customer": {"phone": "+14155552671"},          # or {"user_id": …} or {"conversation_id": …}
     "response": "utter_order_shipped",
     "slots": {"order_number": "40213"},
     "send_at": "2026-12-08T09:00:00Z",              # optional: not before this time
     "consent": {"source": "checkout", "reference": "cons_981"}}   # optional

Answered ``{"id", "status", "channel", "reason", "due"}``: ``status`` is ``sent``, ``queued``
(shown when the customer next opens the chat), ``scheduled`` (``due`` says when: ``send_at``,
or the end of the customer's quiet hours, with ``reason``) or ``refused`` (``reason``:
``opted_out``, ``not_reachable``, ``customer_rate_limit``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Union

from pydantic import (
    BaseModel,
    Extra,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    root_validator,
)

from omnichannel import bounded_json

#: A request is a few short fields.
MAX_REQUEST_BYTES = 8192
MAX_SLOTS = 20
SLOT_VALUE_MAX_CHARS = 256
#: How far ahead ``send_at`` may lie.
MAX_SCHEDULE_DAYS = 30

SlotValue = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]


class BadRequest(ValueError):
    """A request this API refuses with a 4xx; the message is short and safe to return."""


class Customer(BaseModel, extra=Extra.forbid):
    phone: Optional[str] = Field(default=None, min_length=3, max_length=64)
    user_id: Optional[str] = Field(default=None, min_length=1, max_length=128)
    conversation_id: Optional[str] = Field(default=None, min_length=3, max_length=64)

    @root_validator(skip_on_failure=True)
    def exactly_one(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        named = [name for name, value in values.items() if value is not None]
        if len(named) != 1:
            raise ValueError("name the customer by exactly one of phone, user_id, conversation_id")
        return values


class ConsentRecord(BaseModel, extra=Extra.forbid):
    """The business's record of the customer's consent to be contacted."""

    source: str = Field(min_length=1, max_length=64)
    reference: str = Field(default="", max_length=128)


class NotificationRequest(BaseModel, extra=Extra.forbid):
    customer: Customer
    response: str = Field(regex=r"^utter_[A-Za-z0-9_]{1,100}\Z")
    slots: Dict[str, SlotValue] = Field(default_factory=dict)
    send_at: Optional[datetime] = None
    consent: Optional[ConsentRecord] = None


def parse_request(body: bytes, now: float) -> NotificationRequest:
    """The request of ``body``; raises :class:`BadRequest` with a short reason."""
    try:
        data = bounded_json.loads(body)
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        request = NotificationRequest.parse_obj(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "__root__")
        raise BadRequest(f"{where or 'body'}: {first['msg']}"[:200]) from None
    if len(request.slots) > MAX_SLOTS:
        raise BadRequest(f"at most {MAX_SLOTS} slots")
    for name, value in request.slots.items():
        if len(name) > 64 or (isinstance(value, str) and len(value) > SLOT_VALUE_MAX_CHARS):
            raise BadRequest(f"slot {name[:64]!r}: at most {SLOT_VALUE_MAX_CHARS} characters")
    if request.send_at is not None:
        if request.send_at.tzinfo is None:
            raise BadRequest("send_at needs a time zone (e.g. 2026-12-08T09:00:00Z)")
        ahead = request.send_at.timestamp() - now
        if ahead > MAX_SCHEDULE_DAYS * 24 * 3600:
            raise BadRequest(f"send_at at most {MAX_SCHEDULE_DAYS} days ahead")
    return request


def body_digest(body: bytes) -> str:
    """What tells "the same body" of a retried request: its JSON, key order and spacing aside
    (the body is parsed already, so this never fails)."""
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def answer(
    item_id: str,
    status: str,
    channel: Optional[str],
    reason: Optional[str],
    due: Optional[float],
) -> Dict[str, Any]:
    return {
        "id": item_id,
        "status": status,
        "channel": channel,
        "reason": reason,
        "due": datetime.fromtimestamp(due, timezone.utc).isoformat() if due else None,
    }
