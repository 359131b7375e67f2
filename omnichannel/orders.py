"""The shop's order data, as the business actions see it.

The demo reads a JSON fixture; a real deployment swaps this module's loader for its order API.
Keeping the lookup here means actions never carry order data themselves.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

DEFAULT_FIXTURE = Path(__file__).parent / "fixtures" / "orders.json"


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

    @property
    def description(self) -> str:
        return " and ".join(self.items)


@lru_cache(maxsize=4)
def _load(path: str) -> Dict[str, Order]:
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
        )
        for number, fields in raw.items()
    }


_DIGIT_WORDS = {
    word: str(digit)
    for digit, word in enumerate("zero one two three four five six seven eight nine".split())
}
_NUMBER_TOKEN = re.compile(r"\d|[a-z]+")


def order_digits(number: str) -> str:
    """The digits of an order number as a customer gives it: "12345", "#12345", "1 2 3 4 5"
    or, from a voice transcript, "one two three four five"."""
    tokens = _NUMBER_TOKEN.findall(str(number).lower())
    return "".join(
        _DIGIT_WORDS.get(token, token)
        for token in tokens
        if token.isdigit() or token in _DIGIT_WORDS
    )


def find_order(number: Optional[str]) -> Optional[Order]:
    """The order with this number, or None. ``ORDERS_FIXTURE`` points at another file."""
    if not number:
        return None
    return _load(os.environ.get("ORDERS_FIXTURE", str(DEFAULT_FIXTURE))).get(order_digits(number))
