"""Phone numbers for simulated customers: valid (``phonenumbers`` accepts them, as the connectors
do) and random, so tests on a shared stack and benchmark customers never share a conversation."""

from __future__ import annotations

import random

import phonenumbers

_AREA_CODES = ("212", "312", "415", "510", "617", "628", "646", "650", "718", "917")


def new_phone_number() -> str:
    """A random valid US number, so tests on the shared stack never share a conversation."""
    while True:
        area = random.choice(_AREA_CODES)
        number = f"+1{area}{random.randint(200, 999)}{random.randint(0, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number
