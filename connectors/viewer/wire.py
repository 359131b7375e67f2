"""What the operator asked for: one search (phone number, site user id or conversation id) and
a page of the timeline, parsed from the JSON body of ``POST /api/timeline``; or the recent
outbound items (``POST /api/outbound``). No Sanic, no Rasa.

The search travels in the body, never in the URL, so phone numbers stay out of access logs and
browser history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from omnichannel import bounded_json
from omnichannel.addresses import Address, InvalidAddress, phone_address, user_address
from omnichannel.outbound.items import STATUSES

#: The searches, by their key in the request body.
SEARCH_KEYS = ("phone", "user_id", "conversation_id")
#: Conversation ids are ``c_`` + random from identity, but stock channels (REST, ``rasa shell``)
#: pick their own sender ids; any id a Redis key may carry, of a sane length, is searchable.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")


class BadQuery(ValueError):
    """The request cannot be answered as asked; the message is safe to return in a 400."""


@dataclass(frozen=True)
class Query:
    """One search and the page of events wanted."""

    #: ``phone`` or ``user_id`` search: the address identity maps to a conversation.
    address: Optional[Address]
    #: ``conversation_id`` search: the id itself.
    conversation_id: Optional[str]
    #: Events before this log index (None: up to the latest).
    before: Optional[int]
    #: At most this many events are read for the page.
    limit: int

    @property
    def searched_phone(self) -> Optional[str]:
        """The E.164 number the operator searched by: shown unmasked, as they know it."""
        return self.address.value if self.address and self.address.scheme == "tel" else None


def _whole_number(body: Dict[str, Any], name: str) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadQuery(f"{name} must be a whole number")
    return value


def parse_query(raw: bytes, *, page_events: int, max_page_events: int) -> Query:
    """The query in a request body; ``limit`` defaults to ``page_events`` and may not exceed
    ``max_page_events``. Raises BadQuery."""
    try:
        body = bounded_json.loads(raw or b"null")
    except bounded_json.TooDeep as error:
        raise BadQuery(str(error)) from None
    except ValueError:
        raise BadQuery("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadQuery("the body must be a JSON object")
    unknown = sorted(set(body) - {*SEARCH_KEYS, "before", "limit"})
    if unknown:
        raise BadQuery(f"unknown field(s): {', '.join(unknown)[:200]}")
    given = [key for key in SEARCH_KEYS if body.get(key) is not None]
    if len(given) != 1:
        raise BadQuery(f"give exactly one of {', '.join(SEARCH_KEYS)}")
    key = given[0]
    value = body[key]
    if not isinstance(value, str) or not value.strip():
        raise BadQuery(f"{key} must be a non-empty string")
    before = _whole_number(body, "before")
    if before is not None and before < 0:
        raise BadQuery("before must be 0 or more")
    limit = _whole_number(body, "limit")
    if limit is None:
        limit = page_events
    if not 1 <= limit <= max_page_events:
        raise BadQuery(f"limit must be between 1 and {max_page_events}")
    address, conversation_id = None, None
    try:
        if key == "phone":
            address = phone_address(value)
        elif key == "user_id":
            address = user_address(value)
        elif CONVERSATION_ID.fullmatch(value.strip()):
            conversation_id = value.strip()
        else:
            raise BadQuery("conversation_id must be 1-128 of A-Z a-z 0-9 _ . : @ + -")
    except InvalidAddress as error:
        raise BadQuery(str(error)) from None
    return Query(address=address, conversation_id=conversation_id, before=before, limit=limit)


def parse_erasure(body: bytes) -> str:
    """The conversation id of an erasure request: ``{"conversation_id": "c_…"}``."""
    try:
        data = bounded_json.loads(body or b"{}")
    except ValueError:
        raise BadQuery("the body must be JSON") from None
    conversation_id = data.get("conversation_id") if isinstance(data, dict) else None
    if not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id):
        raise BadQuery("name the conversation_id to erase")
    return conversation_id


def parse_media_query(raw: bytes) -> Tuple[str, int, int]:
    """``(conversation id, event index, media item)`` of a ``POST /api/media`` body. Raises
    BadQuery."""
    try:
        body = bounded_json.loads(raw or b"null")
    except bounded_json.TooDeep as error:
        raise BadQuery(str(error)) from None
    except (UnicodeDecodeError, ValueError):
        raise BadQuery("the body must be JSON") from None
    if not isinstance(body, dict) or set(body) != {"conversation_id", "index", "item"}:
        raise BadQuery("give conversation_id, index and item")
    conversation_id, index, item = body["conversation_id"], body["index"], body["item"]
    if not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id):
        raise BadQuery("conversation_id is not a conversation id")
    for name, value in (("index", index), ("item", item)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**9:
            raise BadQuery(f"{name} must be a whole number, 0 or more")
    return conversation_id, index, item


#: The most outbound items one ``POST /api/outbound`` lists.
MAX_OUTBOUND_ITEMS = 200


def parse_outbound_query(raw: bytes) -> Tuple[Optional[str], int]:
    """``(status or None, limit)`` of a ``POST /api/outbound`` body ``{"status"?, "limit"?}``.
    Raises BadQuery."""
    try:
        body = bounded_json.loads(raw or b"{}")
    except ValueError:
        raise BadQuery("the body must be a JSON object") from None
    if not isinstance(body, dict) or set(body) - {"status", "limit"}:
        raise BadQuery("the body may hold status and limit only")
    status = body.get("status")
    if status is not None and status not in STATUSES:
        raise BadQuery(f"status must be one of {', '.join(STATUSES)}")
    limit = _whole_number(body, "limit")
    if limit is None:
        limit = 100
    if not 1 <= limit <= MAX_OUTBOUND_ITEMS:
        raise BadQuery(f"limit must be from 1 to {MAX_OUTBOUND_ITEMS}")
    return status, limit
