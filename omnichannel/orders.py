"""The shop's order data, as the business actions see it, and whose each order is.

The demo reads a JSON fixture; a real deployment swaps this module's loader for its order API.
Keeping the lookup here means actions never carry order data themselves.

Every order has an owner (a phone number, a site user id, or both), and :func:`find_order`
answers only for orders of the verified identity it is given: a conversation's contact profile
(``omnichannel.identity.ContactProfile``: the phone from a caller id, a Twilio-signed ``From``
or a host site's verified phone claim; the user from a signed chat token). Someone else's order
and a number that does not exist give the same None, so nobody learns which numbers exist.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Protocol, Tuple

from omnichannel.addresses import E164_PATTERN

DEFAULT_FIXTURE = Path(__file__).parent / "fixtures" / "orders.json"


class VerifiedIdentity(Protocol):
    """Who a conversation's customer is known to be (a ``ContactProfile`` is one)."""

    @property
    def phone(self) -> Optional[str]: ...

    @property
    def user_id(self) -> Optional[str]: ...


@dataclass(frozen=True)
class Customer:
    """A phone number (E.164) and/or a site user id: an order's owner, or a verified identity
    a connector knows without a profile (a VAPI caller's number)."""

    phone: Optional[str] = None
    user_id: Optional[str] = None


def is_identified(identity: VerifiedIdentity) -> bool:
    """Whether orders can be looked up for this identity at all (an anonymous web chat visitor
    or a caller without caller id has neither a phone number nor a site user)."""
    return bool(identity.phone or identity.user_id)


@dataclass(frozen=True)
class Order:
    number: str
    items: Tuple[str, ...]
    status: str
    carrier: Optional[str]
    tracking_number: Optional[str]
    tracking_url: Optional[str]
    ordered_on: str
    estimated_delivery: Optional[str]
    delivered_on: Optional[str]
    refundable: bool
    refund_reason: Optional[str]
    owner: Customer

    @property
    def description(self) -> str:
        return " and ".join(self.items)

    def belongs_to(self, identity: VerifiedIdentity) -> bool:
        """True when the identity has the owner's phone number or the owner's site user."""
        owner = self.owner
        return bool(
            (owner.phone and owner.phone == identity.phone)
            or (owner.user_id and owner.user_id == identity.user_id)
        )


def _owner(number: str, raw: object) -> Customer:
    """An order's owner from the fixture; an order nobody owns is a mistake in the data."""
    if not isinstance(raw, dict):
        raise ValueError(f"order {number}: owner must be an object with a phone and/or a user_id")
    phone, user_id = raw.get("phone"), raw.get("user_id")
    if phone is not None and not (isinstance(phone, str) and E164_PATTERN.fullmatch(phone)):
        raise ValueError(f"order {number}: owner phone must be E.164 (+ and 7-15 digits)")
    if user_id is not None and not (isinstance(user_id, str) and user_id.strip()):
        raise ValueError(f"order {number}: owner user_id must be a non-empty string")
    if not (phone or user_id):
        raise ValueError(f"order {number}: owner needs a phone or a user_id")
    return Customer(phone=phone, user_id=user_id)


@lru_cache(maxsize=4)
def _load(path: str, version: Tuple[int, int, int]) -> Dict[str, Order]:
    """The orders in ``path`` as of ``version`` (its inode, mtime and size), so a changed file
    is read again and an unchanged one is not."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        number: Order(
            number=number,
            items=tuple(fields["items"]),
            status=fields["status"],
            carrier=fields.get("carrier"),
            tracking_number=fields.get("tracking_number"),
            tracking_url=fields.get("tracking_url"),
            ordered_on=fields["ordered_on"],
            estimated_delivery=fields.get("estimated_delivery"),
            delivered_on=fields.get("delivered_on"),
            refundable=bool(fields.get("refundable", False)),
            refund_reason=fields.get("refund_reason"),
            owner=_owner(number, fields.get("owner")),
        )
        for number, fields in raw.items()
    }


def _orders() -> Dict[str, Order]:
    """Every order of the fixture ``ORDERS_FIXTURE`` names (the demo's by default), read again
    whenever the file changes: a test stack adds its customers' orders while it runs."""
    path = os.environ.get("ORDERS_FIXTURE", str(DEFAULT_FIXTURE))
    stat = os.stat(path)
    return _load(path, (stat.st_ino, stat.st_mtime_ns, stat.st_size))


_DIGIT_WORDS = {
    word: str(digit)
    for digit, word in enumerate("zero one two three four five six seven eight nine".split())
}
#: A zero said as the letter ("seven seven eight oh one").
_DIGIT_WORDS["oh"] = "0"
_NUMBER_TOKEN = re.compile(r"\d|[a-z]+")


def order_digits(number: str) -> str:
    """The digits of an order number as a customer gives it: "12345", "#12345", "1 2 3 4 5"
    or, from a voice transcript, "one two three four five" (a zero also as "oh")."""
    tokens = _NUMBER_TOKEN.findall(str(number).lower())
    return "".join(
        _DIGIT_WORDS.get(token, token)
        for token in tokens
        if token.isdigit() or token in _DIGIT_WORDS
    )


def find_order(number: Optional[str], customer: VerifiedIdentity) -> Optional[Order]:
    """The order with this number if it belongs to ``customer``, else None: an order of
    someone else and a number that does not exist are the same answer."""
    if not number or not is_identified(customer):
        return None
    order = _orders().get(order_digits(number))
    return order if order is not None and order.belongs_to(customer) else None
